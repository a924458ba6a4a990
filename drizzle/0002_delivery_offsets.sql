CREATE TABLE `delivery_offsets` (
	`destination_id` text NOT NULL,
	`topic` text NOT NULL,
	`partition` integer NOT NULL,
	`offset` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`destination_id`, `topic`, `partition`)
);
