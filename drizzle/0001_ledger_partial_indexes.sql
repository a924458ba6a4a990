DROP INDEX `deliveries_status_idx`;--> statement-breakpoint
CREATE INDEX `deliveries_dead_idx` ON `deliveries` (`destination_id`,`dead_at`,`event_id`) WHERE status = 'dead';--> statement-breakpoint
CREATE INDEX `deliveries_replaying_idx` ON `deliveries` (`destination_id`,`updated_at`) WHERE status = 'replaying';