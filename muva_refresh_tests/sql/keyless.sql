-- A table without any key: exact duplicate rows, and a json column, which has no ordering at all.
CREATE TABLE event_log (at date NOT NULL, kind text, payload json);
INSERT INTO event_log
SELECT date '2025-01-01' + (i % 3), 'tick', ('{"n": ' || (i % 4) || ', "x": [1, 2]}')::json
FROM generate_series(1, 60) i;
-- rows that tie on every orderable column and differ only in json
INSERT INTO event_log VALUES ('2025-02-01', 'same', '{"a": 1}'), ('2025-02-01', 'same', '{"a": 2}'),
                             ('2025-02-01', 'same', '{"a": 1}'), ('2025-02-01', 'same', '{ "a" : 1 }');
