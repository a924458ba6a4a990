CREATE TABLE `state_offsets` (
	`topic` text NOT NULL,
	`partition` integer NOT NULL,
	`offset` integer NOT NULL,
	PRIMARY KEY(`topic`, `partition`)
);
