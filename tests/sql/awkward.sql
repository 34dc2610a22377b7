-- A schema with every awkward case the offline copy must carry intact.
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE SCHEMA "Ünïcode schema";
CREATE TABLE "Ünïcode schema"."Tâble ""quoted""" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "Größe" numeric(12,3),
    note text
);
INSERT INTO "Ünïcode schema"."Tâble ""quoted""" ("Größe", note)
SELECT g * 1.5, 'ñandú ' || g FROM generate_series(1, 500) g;
CREATE TABLE typed (
    id serial PRIMARY KEY,
    m mood,
    ms mood[],
    p pair,
    ps pair[],
    d posint,
    h hstore,
    c citext,
    j jsonb,
    f float8,
    r real,
    ts timestamptz,
    iv interval,
    b bytea,
    arr int[],
    rc regclass,
    doubled int GENERATED ALWAYS AS (id * 2) STORED
);
INSERT INTO typed (m, ms, p, ps, d, h, c, j, f, r, ts, iv, b, arr, rc)
SELECT (ARRAY['sad','ok','happy'])[1 + g % 3]::mood,
       ARRAY['ok','happy']::mood[],
       ROW(g, 'x' || g)::pair,
       ARRAY[ROW(g, 'a')::pair, ROW(NULL, NULL)::pair],
       g,
       hstore('k' || g, 'v'),
       'MiXeD' || g,
       jsonb_build_object('g', g, 'nested', jsonb_build_array(1, 'two', NULL)),
       g / 7.0,
       g / 3.0,
       '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
       g * interval '1 day 3 minutes',
       decode(md5(g::text), 'hex'),
       ARRAY[g, NULL, g + 1],
       'typed'::regclass
FROM generate_series(1, 1000) g;
INSERT INTO typed (m) VALUES (NULL);
CREATE TABLE dropped_cols (id int PRIMARY KEY, gone text, kept text, gone2 int);
INSERT INTO dropped_cols SELECT g, 'x', 'kept ' || g, g FROM generate_series(1, 300) g;
ALTER TABLE dropped_cols DROP COLUMN gone;
ALTER TABLE dropped_cols DROP COLUMN gone2;
CREATE TABLE measurements (id bigint, at date NOT NULL, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
    PARTITION BY HASH (id);
CREATE TABLE measurements_2026_a PARTITION OF measurements_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE measurements_2026_b PARTITION OF measurements_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE INDEX ON measurements (v);
INSERT INTO measurements SELECT g, '2025-01-01'::date + (g % 700), g % 10 FROM generate_series(1, 5000) g;
CREATE TABLE parent_t (id int PRIMARY KEY, name text UNIQUE);
CREATE TABLE child_t (id int PRIMARY KEY, parent_id int REFERENCES parent_t (id) ON DELETE CASCADE, CHECK (id > 0));
INSERT INTO parent_t SELECT g, 'p' || g FROM generate_series(1, 100) g;
INSERT INTO child_t SELECT g, 1 + g % 100 FROM generate_series(1, 1000) g;
CREATE TABLE no_pk (a int, b text);
INSERT INTO no_pk SELECT g % 10, 'dup' FROM generate_series(1, 100) g;
CREATE TABLE empty_t (id int PRIMARY KEY);
CREATE TABLE only_generated (g int GENERATED ALWAYS AS (1) STORED);
CREATE SEQUENCE standalone_seq START 1000;
SELECT nextval('standalone_seq') FROM generate_series(1, 42);
CREATE VIEW typed_view AS SELECT id, m FROM typed WHERE m = 'ok';
CREATE MATERIALIZED VIEW typed_mv AS SELECT m, count(*) AS n FROM typed GROUP BY m;
CREATE UNIQUE INDEX ON typed_mv (m);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := NEW.note || ';'; RETURN NEW; END $$;
CREATE TRIGGER touch_trg BEFORE INSERT ON "Ünïcode schema"."Tâble ""quoted""" FOR EACH ROW EXECUTE FUNCTION touch();
COMMENT ON TABLE typed IS 'has; semicolons and ''quotes''';
CREATE INDEX typed_j ON typed USING gin (j);
CREATE INDEX typed_lower ON typed (lower(c::text)) WHERE id > 10;
SELECT lo_from_bytea(0, decode(repeat('ab', 300000), 'hex'));
SELECT lo_from_bytea(0, '\x00'::bytea);
CREATE ROLE app_owner NOLOGIN;
CREATE TABLE owned_t (id int PRIMARY KEY);
ALTER TABLE owned_t OWNER TO app_owner;
GRANT SELECT ON typed TO app_owner;
