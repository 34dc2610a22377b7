-- Tables for the awkward streaming cases; changes to them are made while
-- the migration streams (see tests/online.rs).
CREATE TABLE toasty (id int PRIMARY KEY, big text, small int);
ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO toasty SELECT g, repeat(md5(g::text), 400), 0 FROM generate_series(1, 20) g;
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup'), (2, 'x');
CREATE TABLE byindex (a int NOT NULL, b int NOT NULL, v text);
CREATE UNIQUE INDEX byindex_ab ON byindex (a, b);
ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_ab;
INSERT INTO byindex SELECT g, g, 'v' FROM generate_series(1, 10) g;
CREATE TABLE parts (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE parts_lo PARTITION OF parts FOR VALUES FROM (0) TO (100);
CREATE TABLE parts_hi PARTITION OF parts FOR VALUES FROM (100) TO (200);
INSERT INTO parts SELECT g, g % 100, 'p' FROM generate_series(1, 50) g;
CREATE TABLE fk_parent (id int PRIMARY KEY);
CREATE TABLE fk_child (id int PRIMARY KEY, parent int REFERENCES fk_parent (id));
CREATE TABLE trunc_me (id int PRIMARY KEY);
INSERT INTO trunc_me SELECT generate_series(1, 100);
CREATE TABLE jsonful (id serial PRIMARY KEY, doc json, pt point);
ALTER TABLE jsonful REPLICA IDENTITY FULL;
INSERT INTO jsonful (doc, pt) VALUES ('{"a": 1}', '(1,2)'), ('{"b": 2}', '(3,4)');
CREATE TABLE bulk (id bigint PRIMARY KEY, v text);
-- Rows changed many times inside one transaction (folded per key by apply).
CREATE TABLE hot (id int PRIMARY KEY, n int, note text);
INSERT INTO hot SELECT g, 0, 'n' FROM generate_series(1, 5) g;
CREATE TABLE uniq2 (id int PRIMARY KEY, u int UNIQUE, v text);
INSERT INTO uniq2 VALUES (1, 1, 'a'), (2, 2, 'b');
CREATE TABLE txtkey (k text PRIMARY KEY, v text);
INSERT INTO txtkey VALUES ('a', '1');
CREATE TABLE toasty2 (id int PRIMARY KEY, big text, small int);
ALTER TABLE toasty2 ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE numkey (k numeric PRIMARY KEY, v int);
INSERT INTO numkey VALUES (1.0, 0);
-- Inheritance (not partitioning): the child's rows are its own table's.
CREATE TABLE inh_parent (id int PRIMARY KEY, v text);
CREATE TABLE inh_child (extra int) INHERITS (inh_parent);
ALTER TABLE inh_child ADD PRIMARY KEY (id);
INSERT INTO inh_parent VALUES (1, 'p'), (2, 'p');
INSERT INTO inh_child VALUES (1, 'c', 0), (2, 'c', 0);
