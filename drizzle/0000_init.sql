CREATE TABLE `attempts` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`event_id` text NOT NULL,
	`destination_id` text NOT NULL,
	`user_id` text NOT NULL,
	`attempt_number` integer NOT NULL,
	`started_at` integer NOT NULL,
	`duration_ms` integer NOT NULL,
	`status_code` integer,
	`error` text,
	`response_snippet` text,
	`outcome` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `attempts_destination_idx` ON `attempts` (`destination_id`,`id`);--> statement-breakpoint
CREATE INDEX `attempts_event_idx` ON `attempts` (`event_id`);--> statement-breakpoint
CREATE TABLE `deliveries` (
	`destination_id` text NOT NULL,
	`event_id` text NOT NULL,
	`user_id` text NOT NULL,
	`status` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`last_error` text,
	`event` text,
	`updated_at` integer NOT NULL,
	`dead_at` integer,
	PRIMARY KEY(`destination_id`, `event_id`)
);
--> statement-breakpoint
CREATE INDEX `deliveries_status_idx` ON `deliveries` (`destination_id`,`status`);--> statement-breakpoint
CREATE TABLE `destinations` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text,
	`url` text NOT NULL,
	`event_types` text DEFAULT '[]' NOT NULL,
	`headers` text DEFAULT '{}' NOT NULL,
	`secret` text NOT NULL,
	`max_attempts` integer NOT NULL,
	`timeout_ms` integer NOT NULL,
	`backoff_base_ms` integer NOT NULL,
	`backoff_max_ms` integer NOT NULL,
	`max_concurrency` integer NOT NULL,
	`disabled` integer DEFAULT false NOT NULL,
	`disabled_reason` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `idempotency_keys` (
	`key` text PRIMARY KEY NOT NULL,
	`request_hash` text NOT NULL,
	`status` integer NOT NULL,
	`response` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `idempotency_expires_idx` ON `idempotency_keys` (`expires_at`);