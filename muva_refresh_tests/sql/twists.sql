-- Every shape the graph and the copy must handle: a self-reference, an FK cycle, a composite
-- FK, a table without a primary key, identity, serial and generated columns, an enum array.
CREATE TYPE mood AS ENUM ('happy', 'sad', 'curious');

CREATE TABLE region (id int PRIMARY KEY, name text NOT NULL UNIQUE);

CREATE TABLE customer (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_id int REFERENCES region (id),
    referred_by bigint REFERENCES customer (id),
    name text NOT NULL,
    name_upper text GENERATED ALWAYS AS (upper(name)) STORED
);

CREATE TABLE team (id int PRIMARY KEY, lead_id int);
CREATE TABLE person (
    id int PRIMARY KEY,
    team_id int REFERENCES team (id) DEFERRABLE INITIALLY DEFERRED,
    moods mood[],
    tags text[],
    doc jsonb,
    photo bytea,
    seen_at timestamptz
);
ALTER TABLE team ADD CONSTRAINT team_lead_fk FOREIGN KEY (lead_id) REFERENCES person (id) DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE shelf (aisle int, slot int, label text, PRIMARY KEY (aisle, slot));
CREATE TABLE item (
    id serial PRIMARY KEY,
    aisle int,
    slot int,
    owner_id int REFERENCES person (id),
    FOREIGN KEY (aisle, slot) REFERENCES shelf (aisle, slot)
);

CREATE TABLE audit_log (at timestamptz NOT NULL, note text, customer_id bigint REFERENCES customer (id));

BEGIN;
INSERT INTO region VALUES (1, 'north'), (2, 'south');
INSERT INTO customer (region_id, referred_by, name)
    SELECT 1 + i % 2, NULL, 'customer ' || i FROM generate_series(1, 50) i;
UPDATE customer SET referred_by = id - 1 WHERE id > 1;
INSERT INTO team VALUES (1, 10), (2, 20);
INSERT INTO person VALUES
    (10, 1, '{happy,curious}', '{a,"b c"}', '{"k": [1, 2]}', '\x00ff', '2025-01-01 10:00+00'),
    (20, 2, '{sad}', '{}', 'null', NULL, NULL),
    (30, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO shelf SELECT a, s, 'shelf ' || a || '-' || s FROM generate_series(1, 3) a, generate_series(1, 4) s;
INSERT INTO item (aisle, slot, owner_id) SELECT 1 + i % 3, 1 + i % 4, (ARRAY[10, 20, 30])[1 + i % 3] FROM generate_series(1, 40) i;
INSERT INTO item (aisle, slot, owner_id) VALUES (NULL, 2, 10);  -- MATCH SIMPLE: a NULL part is no orphan
INSERT INTO audit_log SELECT '2025-01-01'::timestamptz + i * interval '1 hour', 'note ' || i, 1 + i % 50 FROM generate_series(1, 30) i;
INSERT INTO audit_log VALUES ('2025-02-01', 'duplicate row', 1), ('2025-02-01', 'duplicate row', 1);
COMMIT;

-- What the checks compare besides rows: RLS and policies, unique and other indexes.
ALTER TABLE region ENABLE ROW LEVEL SECURITY;
CREATE POLICY region_read ON region FOR SELECT USING (true);
ALTER TABLE customer ENABLE ROW LEVEL SECURITY;
ALTER TABLE customer FORCE ROW LEVEL SECURITY;
CREATE POLICY customer_by_region ON customer USING (region_id = current_setting('app.region', true)::int);
CREATE POLICY customer_insert ON customer FOR INSERT WITH CHECK (name <> '');
CREATE INDEX person_doc_gin ON person USING gin (doc);
CREATE INDEX audit_log_customer ON audit_log (customer_id);
CREATE UNIQUE INDEX "Customer name per region" ON customer (region_id, name);
