-- Personal data for the masking tests: a unique e-mail that FKs point at (directly and through
-- a second level), formatted digits under a CHECK, short and NOT NULL columns, json and dates.
CREATE TABLE staff_users (
    id uuid PRIMARY KEY,
    email text NOT NULL UNIQUE,
    full_name text,
    password_hash text NOT NULL,
    badge varchar(10),
    short_code varchar(8) UNIQUE,
    level integer UNIQUE,
    visits integer,
    born date,
    last_login timestamptz,
    avatar bytea,
    email_lower text GENERATED ALWAYS AS (lower(email)) STORED
);
CREATE TABLE staff_notes (
    id bigint PRIMARY KEY,
    author_email text REFERENCES staff_users (email),
    body text
);
CREATE TABLE mentors (
    email text PRIMARY KEY REFERENCES staff_users (email),
    topic text
);
CREATE TABLE mentor_sessions (
    id bigint PRIMARY KEY,
    mentor_email text REFERENCES mentors (email),
    held_on date
);
CREATE TABLE guests (
    id bigint PRIMARY KEY,
    name varchar(40) NOT NULL,
    phone text,
    doc text CONSTRAINT doc_is_four_digits CHECK (doc ~ '^[0-9]{4}$'),
    payload jsonb,
    legacy json,
    check_in date,
    booked_at timestamptz
);

INSERT INTO staff_users (id, email, full_name, password_hash, badge, short_code, level, visits, born, last_login, avatar)
SELECT gen_random_uuid(), 'staff' || i || '@muva.example', 'Staff ' || i, 'pw' || i, 'B' || i, 'c' || i, i, i % 7,
       date '1980-01-01' + i, timestamptz '2024-05-01 12:00+00' + i * interval '1 hour', decode(md5(i::text), 'hex')
FROM generate_series(1, 50) i;
INSERT INTO staff_notes SELECT i, 'staff' || (i % 50 + 1) || '@muva.example', 'note ' || i FROM generate_series(1, 100) i;
INSERT INTO mentors SELECT 'staff' || i || '@muva.example', 'topic ' || i FROM generate_series(1, 10) i;
INSERT INTO mentor_sessions SELECT i, 'staff' || (i % 10 + 1) || '@muva.example', date '2024-01-01' + i FROM generate_series(1, 30) i;
INSERT INTO guests
SELECT i, 'Guest ' || i, '+34 600 ' || lpad(i::text, 3, '0'), lpad(i::text, 4, '0'),
       jsonb_build_object('guest', jsonb_build_object('email', 'g' || i || '@mail.example', 'phone', '555-' || i)),
       json_build_object('guest', json_build_object('email', 'g' || i || '@mail.example')),
       date '2024-06-01' + i, timestamptz '2024-06-01 15:00+00' + i * interval '1 day'
FROM generate_series(1, 200) i;
