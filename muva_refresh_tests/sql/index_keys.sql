-- Index key columns as pg_index records them: INCLUDE columns are not keys, expressions are.
CREATE TABLE member (
    id int PRIMARY KEY,
    email text NOT NULL,
    name text,
    nick text
);
CREATE UNIQUE INDEX member_email ON member (email) INCLUDE (name);
CREATE UNIQUE INDEX member_nick_lower ON member (lower(nick));
CREATE INDEX member_name_email ON member (name, email);
