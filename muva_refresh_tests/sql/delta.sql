-- What the delta refresh compares by key: uuid, text, timestamp and composite keys, a unique
-- key beside the primary one, NULLs outside keys, a partitioned table, a table without a key.
CREATE TABLE account (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, note text, referred_by uuid REFERENCES account (id));
CREATE TABLE tag (name text PRIMARY KEY, color text);
CREATE TABLE reading (at timestamptz PRIMARY KEY, value numeric, account_id uuid REFERENCES account (id));
CREATE TABLE membership (
    account_id uuid REFERENCES account (id),
    tag text REFERENCES tag (name),
    since date,
    PRIMARY KEY (account_id, tag)
);
CREATE TABLE payment (id int, month date, amount numeric, account_id uuid REFERENCES account (id),
                      PRIMARY KEY (id, month)) PARTITION BY RANGE (month);
CREATE TABLE payment_2025_01 PARTITION OF payment FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
CREATE TABLE payment_2025_02 PARTITION OF payment FOR VALUES FROM ('2025-02-01') TO ('2025-03-01');
CREATE TABLE loose (at date, kind text);
CREATE INDEX reading_value ON reading (value);

BEGIN;
INSERT INTO account SELECT md5(i::text)::uuid, 'user' || i || '@example.com', CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || i END
FROM generate_series(1, 200) i;
UPDATE account SET referred_by = md5((i - 1)::text)::uuid FROM generate_series(2, 200) i WHERE id = md5(i::text)::uuid;
INSERT INTO tag VALUES ('red', 'f00'), ('green', NULL), ('blue', '00f'), ('spare', NULL);
INSERT INTO reading SELECT timestamptz '2025-01-01 00:00+00' + i * interval '1 minute', i * 1.5, md5((1 + i % 200)::text)::uuid
FROM generate_series(1, 500) i;
INSERT INTO membership SELECT md5(i::text)::uuid, (ARRAY['red', 'green', 'blue'])[1 + i % 3], date '2024-01-01' + i
FROM generate_series(1, 200) i;
INSERT INTO payment SELECT i, date '2025-01-01' + (i % 2) * 31, i * 10, md5((1 + i % 200)::text)::uuid
FROM generate_series(1, 300) i;
INSERT INTO loose SELECT date '2025-01-01' + i % 5, 'kind' FROM generate_series(1, 40) i;
COMMIT;
