-- A materialized view over two copied tables (through a plain view), and a second over the first.
CREATE TABLE shop (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE sale (id int PRIMARY KEY, shop_id int NOT NULL REFERENCES shop (id), amount numeric(10, 2) NOT NULL);
CREATE VIEW sale_named AS SELECT s.id, sh.name, s.amount FROM sale s JOIN shop sh ON sh.id = s.shop_id;
CREATE MATERIALIZED VIEW shop_totals AS
    SELECT name, sum(amount) AS total, count(*) AS sales FROM sale_named GROUP BY name WITH NO DATA;
CREATE MATERIALIZED VIEW top_shop AS
    SELECT name, total FROM shop_totals WHERE total = (SELECT max(total) FROM shop_totals) WITH NO DATA;
