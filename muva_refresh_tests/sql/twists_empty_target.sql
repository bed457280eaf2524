-- Stale rows the refresh must replace.
INSERT INTO region VALUES (9, 'stale region');
INSERT INTO customer (region_id, name) VALUES (9, 'stale customer');
