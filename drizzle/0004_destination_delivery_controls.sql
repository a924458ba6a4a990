CREATE TABLE `event_types` (
	`name` text PRIMARY KEY NOT NULL,
	`description` text,
	`schema` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `destinations` ADD `previous_secret` text;--> statement-breakpoint
ALTER TABLE `destinations` ADD `previous_secret_expires_at` integer;--> statement-breakpoint
ALTER TABLE `destinations` ADD `rate_limit_per_second` real;--> statement-breakpoint
ALTER TABLE `destinations` ADD `rate_limit_burst` integer;--> statement-breakpoint
ALTER TABLE `destinations` ADD `kind` text DEFAULT 'webhook' NOT NULL;--> statement-breakpoint
ALTER TABLE `destinations` ADD `auto_disable_after_hours` real DEFAULT 120;--> statement-breakpoint
ALTER TABLE `destinations` ADD `auto_disable_after_dead_letters` integer;--> statement-breakpoint
ALTER TABLE `destinations` ADD `streak_reset_at` integer;--> statement-breakpoint
ALTER TABLE `destinations` ADD `replay` text;--> statement-breakpoint
ALTER TABLE `destinations` ADD `filter` text;