-- The retention job: settled deliveries by age, and events by age.
CREATE INDEX deliveries_settled ON deliveries (created_at_us) WHERE state <> 'pending';
CREATE INDEX events_by_time ON events (occurred_at_us);
