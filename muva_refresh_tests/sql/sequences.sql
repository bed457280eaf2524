-- Sequences as pg_dump writes an older database: created apart, no OWNED BY, defaults set
-- afterwards; one sequence shared by two tables, one descending, one wrapped in an expression,
-- one in a schema of its own.
CREATE SCHEMA counters;
CREATE SEQUENCE public.film_film_id_seq START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;
CREATE SEQUENCE public.countdown_seq INCREMENT BY -1 MINVALUE -1000000 MAXVALUE -1 START WITH -1;
CREATE SEQUENCE public.invoice_no_seq;
CREATE SEQUENCE counters.note_seq;

CREATE TABLE public.film (film_id integer NOT NULL, title text NOT NULL);
CREATE TABLE public.film_archive (film_id integer NOT NULL, title text NOT NULL);
CREATE TABLE public.ticket (id integer NOT NULL, seat text);
CREATE TABLE public.invoice (code text NOT NULL, amount numeric(10, 2));
CREATE TABLE public.note (id bigint NOT NULL, body text);

ALTER TABLE ONLY public.film ALTER COLUMN film_id SET DEFAULT nextval('public.film_film_id_seq'::regclass);
ALTER TABLE ONLY public.film_archive ALTER COLUMN film_id SET DEFAULT nextval('public.film_film_id_seq'::regclass);
ALTER TABLE ONLY public.ticket ALTER COLUMN id SET DEFAULT nextval('public.countdown_seq'::regclass);
ALTER TABLE ONLY public.invoice ALTER COLUMN code
    SET DEFAULT ('INV-' || lpad(nextval('public.invoice_no_seq'::regclass)::text, 6, '0'));
ALTER TABLE ONLY public.note ALTER COLUMN id SET DEFAULT nextval('counters.note_seq'::regclass);

ALTER TABLE ONLY public.film ADD CONSTRAINT film_pkey PRIMARY KEY (film_id);
ALTER TABLE ONLY public.film_archive ADD CONSTRAINT film_archive_pkey PRIMARY KEY (film_id);
ALTER TABLE ONLY public.ticket ADD CONSTRAINT ticket_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.invoice ADD CONSTRAINT invoice_pkey PRIMARY KEY (code);
ALTER TABLE ONLY public.note ADD CONSTRAINT note_pkey PRIMARY KEY (id);

INSERT INTO public.film (title) SELECT 'film ' || i FROM generate_series(1, 30) i;
INSERT INTO public.film_archive (title) SELECT 'old film ' || i FROM generate_series(1, 12) i;
INSERT INTO public.ticket (seat) SELECT 'seat ' || i FROM generate_series(1, 20) i;
INSERT INTO public.invoice (amount) SELECT i * 2.5 FROM generate_series(1, 15) i;
INSERT INTO public.note (body) SELECT 'note ' || i FROM generate_series(1, 5) i;
