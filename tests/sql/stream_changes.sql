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
INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 1000000) g;
