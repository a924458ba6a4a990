CREATE TABLE `stats_accepted` (
	`bucket` integer NOT NULL,
	`type` text NOT NULL,
	`count` integer NOT NULL,
	PRIMARY KEY(`bucket`, `type`)
);
--> statement-breakpoint
CREATE TABLE `stats_deliveries` (
	`bucket` integer NOT NULL,
	`destination_id` text NOT NULL,
	`outcome` text NOT NULL,
	`count` integer NOT NULL,
	PRIMARY KEY(`bucket`, `destination_id`, `outcome`)
);
--> statement-breakpoint
CREATE TABLE `stats_last_error` (
	`destination_id` text PRIMARY KEY NOT NULL,
	`at` integer NOT NULL,
	`event_id` text NOT NULL,
	`status_code` integer,
	`error` text
);
--> statement-breakpoint
CREATE TABLE `stats_latency` (
	`bucket` integer NOT NULL,
	`destination_id` text NOT NULL,
	`bin` integer NOT NULL,
	`count` integer NOT NULL,
	PRIMARY KEY(`bucket`, `destination_id`, `bin`)
);
--> statement-breakpoint
CREATE TABLE `stats_users` (
	`bucket` integer NOT NULL,
	`user_id` text NOT NULL,
	`count` integer NOT NULL,
	PRIMARY KEY(`bucket`, `user_id`)
);
