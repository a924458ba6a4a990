ALTER TABLE `destinations` ADD `previous_secret` text;--> statement-breakpoint
ALTER TABLE `destinations` ADD `previous_secret_expires_at` integer;--> statement-breakpoint
ALTER TABLE `destinations` ADD `filter` text;