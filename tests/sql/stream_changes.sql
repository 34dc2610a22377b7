-- Changes made on the source while the migration streams.
UPDATE toasty SET small = small + 1;                        -- big stays unchanged TOAST
UPDATE toasty SET big = big || 'x' WHERE id = 3;            -- a TOASTed value that does change
INSERT INTO ident (v) SELECT 'i' || g FROM generate_series(1, 50) g;
UPDATE nokey SET b = 'changed' WHERE a = 1 AND ctid = (SELECT min(ctid) FROM nokey WHERE a = 1);
DELETE FROM nokey WHERE a = 2;
INSERT INTO nokey VALUES (3, NULL);
UPDATE nokey SET b = 'was null' WHERE a = 3;
UPDATE byindex SET v = 'changed' WHERE a = 5;
UPDATE byindex SET a = 100 WHERE a = 6;                     -- identity key change
DELETE FROM byindex WHERE a = 7;
UPDATE parts SET k = k + 100 WHERE id <= 10;                -- rows move between partitions
DELETE FROM parts WHERE id = 20;
BEGIN;
INSERT INTO fk_parent VALUES (1), (2);
INSERT INTO fk_child VALUES (10, 1), (11, 2);
COMMIT;
BEGIN;
TRUNCATE trunc_me;
INSERT INTO trunc_me VALUES (1000);
COMMIT;
UPDATE jsonful SET doc = '{"a": 10}' WHERE id = 1;
DELETE FROM jsonful WHERE id = 2;
BEGIN;
DO $$ BEGIN FOR i IN 1..200 LOOP UPDATE hot SET n = n + 1, note = 'r' || i WHERE id = 1 + i % 5; END LOOP; END $$;
INSERT INTO hot VALUES (10, 0, 'new'); UPDATE hot SET n = 5 WHERE id = 10; DELETE FROM hot WHERE id = 10;
DELETE FROM hot WHERE id = 2; INSERT INTO hot VALUES (2, 42, 'again');
INSERT INTO hot VALUES (11, 1, 'x'); UPDATE hot SET n = 2 WHERE id = 11;
UPDATE hot SET id = 20 WHERE id = 3;                        -- a key change in the middle
UPDATE hot SET n = 7 WHERE id = 20;
UPDATE uniq2 SET u = 3 WHERE id = 1;                        -- a swap of unique values
UPDATE uniq2 SET u = 1 WHERE id = 2;
UPDATE uniq2 SET u = 2 WHERE id = 1;
UPDATE txtkey SET v = '2' WHERE k = 'a'; INSERT INTO txtkey VALUES ('b', 'x'); UPDATE txtkey SET v = 'y' WHERE k = 'b';
INSERT INTO toasty2 VALUES (1, repeat(md5('a'), 400), 0); UPDATE toasty2 SET small = 1 WHERE id = 1;
UPDATE numkey SET v = 1 WHERE k = 1.0; UPDATE numkey SET k = 1.00, v = 2 WHERE k = 1; UPDATE numkey SET v = 3 WHERE k = 1;
COMMIT;
UPDATE ONLY inh_parent SET v = 'p2' WHERE id = 1;              -- the child's row 1 stays 'c'
DELETE FROM ONLY inh_parent WHERE id = 2;                     -- the child's row 2 stays
INSERT INTO inh_parent VALUES (3, 'p');
TRUNCATE ONLY inh_parent;                                     -- the child keeps its rows
INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 1000000) g;
