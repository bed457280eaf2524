-- Tenants, their units and guests; one guest of tenant 1 stays in a unit of tenant 2, so that
-- unit and tenant 2 must come along. country and audit are reached by no root.
CREATE TABLE tenant (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE country (code text PRIMARY KEY);
CREATE TABLE unit (id int PRIMARY KEY, tenant_id int NOT NULL REFERENCES tenant (id), name text);
CREATE TABLE guest (
    id int PRIMARY KEY,
    tenant_id int NOT NULL REFERENCES tenant (id),
    unit_id int REFERENCES unit (id),
    country text REFERENCES country (code)
);
CREATE TABLE note (id int PRIMARY KEY, guest_id int REFERENCES guest (id), body text);
CREATE TABLE audit (at timestamptz NOT NULL, what text);

INSERT INTO tenant VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO country VALUES ('CO'), ('US'), ('AR');
INSERT INTO unit VALUES (10, 1, 'u10'), (20, 2, 'u20'), (30, 3, 'u30');
INSERT INTO guest VALUES (100, 1, 10, 'CO'), (101, 1, 20, 'US'), (102, 1, NULL, NULL), (200, 2, 20, 'AR'), (300, 3, 30, 'CO');
INSERT INTO note VALUES (1, 100, 'a'), (2, 101, 'b'), (3, 200, 'c'), (4, 300, 'd'), (5, NULL, 'e');
INSERT INTO audit VALUES ('2025-01-01', 'x'), ('2025-01-02', 'y');
