//! The source side of DDL replication: an event trigger on
//! `ddl_command_end` (and one on `sql_drop`) that writes each DDL command,
//! with its search_path, role and objects, as a transactional logical
//! message — so it reaches the stream in commit order, inside its
//! transaction. Created before the slot (no command falls between the
//! snapshot and the capture), kept out of the copied schema, and dropped
//! with the publication at cutover and cancel.
//!
//! Everything lives in one schema named after the migration's slot, so it
//! is found, left out of the dump and dropped by that one name.

use crate::conn::{quote_ident, quote_literal, ConnError, Connection};

use super::command::PREFIX;

/// The capture's schema on the source for the migration object `name`.
pub fn schema_name(name: &str) -> String {
    name.to_string()
}

/// The two event triggers' names.
pub fn trigger_names(name: &str) -> [String; 2] {
    let mut base = name.to_string();
    base.truncate(63 - "_ddl".len());
    [format!("{base}_ddl"), format!("{base}_drp")]
}

/// Whether the session behind `conn` may create event triggers: only a
/// superuser may (or, on RDS, a member of `rds_superuser`).
pub async fn can_capture(conn: &mut Connection) -> Result<bool, ConnError> {
    let rows = conn
        .simple_query(
            "SELECT rolsuper OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r                WHERE r.rolname = 'rds_superuser' AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))              FROM pg_catalog.pg_roles WHERE rolname = current_user",
        )
        .await?;
    Ok(rows.first().and_then(|r| r.bool(0).ok()).unwrap_or(false))
}

/// The SQL that creates the capture for the migration object `name`, whose
/// publications are `name` and (for keyless tables) `insert_publication`.
fn create_sql(name: &str, insert_publication: &str) -> String {
    let s = quote_ident(&schema_name(name));
    let s_lit = quote_literal(&schema_name(name));
    let main = quote_literal(name);
    let ins = quote_literal(insert_publication);
    let prefix = quote_literal(PREFIX);
    let [ddl, drp] = trigger_names(name).map(|t| quote_ident(&t));
    format!(
        r#"CREATE SCHEMA {s};
GRANT USAGE ON SCHEMA {s} TO PUBLIC;
CREATE FUNCTION {s}.emit(payload text, tables_changed boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgm$
DECLARE t oid; pub text;
BEGIN
  -- A FOR TABLE publication learns of new tables (and detached
  -- partitions) here, in the transaction that made them, so their rows
  -- stream from the next one. Without a key a table goes to the
  -- inserts-only publication: the source could not update it otherwise.
  IF tables_changed AND NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {main} AND puballtables) THEN
    FOR t IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
          AND n.nspname <> {s_lit}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
          AND NOT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                          WHERE pr.prrelid = c.oid AND p.pubname IN ({main}, {ins}))
    LOOP
      pub := CASE WHEN EXISTS (SELECT 1 FROM pg_index WHERE indrelid = t AND indisprimary)
                    OR NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {ins})
                  THEN {main} ELSE {ins} END;
      PERFORM set_config('pgmigrate.nested', 'on', true);
      EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', pub, t::regclass);
      PERFORM set_config('pgmigrate.nested', 'off', true);
    END LOOP;
  END IF;
  PERFORM pg_logical_emit_message(true, {prefix}, payload);
END $pgm$;
CREATE FUNCTION {s}.dropped() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $pgm$
DECLARE all_temp boolean;
BEGIN
  SELECT coalesce(bool_and(is_temporary OR schema_name = {s_lit}), false) INTO all_temp
    FROM pg_event_trigger_dropped_objects() WHERE original;
  PERFORM set_config('pgmigrate.dropped_temp',
    CASE WHEN all_temp THEN statement_timestamp()::text || md5(current_query()) ELSE '' END, false);
END $pgm$;
CREATE FUNCTION {s}.capture() RETURNS event_trigger
LANGUAGE plpgsql AS $pgm$
-- No SET search_path here: the command's own search_path is reported,
-- so every name is qualified instead.
DECLARE
  r record; objs jsonb := '[]'; total int := 0;
  k text := pg_catalog.statement_timestamp()::text || pg_catalog.md5(pg_catalog.current_query()); n int;
BEGIN
  IF pg_catalog.current_setting('pgmigrate.nested', true) = 'on' THEN RETURN; END IF;
  -- Which DDL command of its client message this is, counted for every
  -- one (also those not sent) so the target finds the same statement.
  IF pg_catalog.current_setting('pgmigrate.ddl_key', true) IS DISTINCT FROM k THEN
    n := 0;
    PERFORM pg_catalog.set_config('pgmigrate.ddl_key', k, false);
  ELSE
    n := pg_catalog.current_setting('pgmigrate.ddl_seq')::int + 1;
  END IF;
  PERFORM pg_catalog.set_config('pgmigrate.ddl_seq', n::text, false);
  IF pg_catalog.current_setting('application_name', true) = 'pgmigrate'
     OR tg_tag LIKE '% PUBLICATION' OR tg_tag LIKE '% SUBSCRIPTION' OR tg_tag LIKE '% EVENT TRIGGER'
     OR (tg_tag LIKE 'DROP %' AND pg_catalog.current_setting('pgmigrate.dropped_temp', true) = k) THEN
    RETURN;
  END IF;
  FOR r IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
    total := total + 1;
    CONTINUE WHEN r.in_extension OR r.schema_name LIKE 'pg\_temp%' OR r.schema_name = {s_lit};
    objs := objs || pg_catalog.jsonb_build_object('type', r.object_type, 'identity', r.object_identity,
                                       'schema', r.schema_name);
  END LOOP;
  IF total > 0 AND pg_catalog.jsonb_array_length(objs) = 0 THEN RETURN; END IF;
  PERFORM {s}.emit(pg_catalog.jsonb_build_object('query', pg_catalog.current_query(), 'tag', tg_tag,
    'search_path', pg_catalog.current_setting('search_path'), 'role', current_user::text, 'seq', n,
    'objects', objs)::text, tg_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE'));
END $pgm$;
CREATE EVENT TRIGGER {ddl} ON ddl_command_end EXECUTE FUNCTION {s}.capture();
CREATE EVENT TRIGGER {drp} ON sql_drop EXECUTE FUNCTION {s}.dropped();"#
    )
}

/// Creates the capture for `name` unless it exists (a resumed run finds it).
pub async fn create(
    conn: &mut Connection,
    name: &str,
    insert_publication: &str,
) -> Result<(), ConnError> {
    let found = conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = {}",
            quote_literal(&trigger_names(name)[0])
        ))
        .await?;
    if !found.is_empty() {
        return Ok(());
    }
    // One transaction: a half-made capture would fire on a missing function.
    let created = conn
        .execute(&format!(
            "BEGIN; {} COMMIT;",
            create_sql(name, insert_publication)
        ))
        .await;
    if created.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    created.map(|_| ())
}

/// Drops the capture of `name`; anything may already be gone. The schema
/// goes only with what this created in it.
pub async fn drop_if_exists(conn: &mut Connection, name: &str) -> Result<(), ConnError> {
    let s = quote_ident(&schema_name(name));
    let [ddl, drp] = trigger_names(name).map(|t| quote_ident(&t));
    let exists = conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = {}",
            quote_literal(&schema_name(name))
        ))
        .await?;
    conn.execute(&format!(
        "DROP EVENT TRIGGER IF EXISTS {ddl}; DROP EVENT TRIGGER IF EXISTS {drp}"
    ))
    .await?;
    if !exists.is_empty() {
        conn.execute(&format!(
            "DROP FUNCTION IF EXISTS {s}.capture(), {s}.dropped(), {s}.emit(text, boolean); \
             DROP SCHEMA IF EXISTS {s}"
        ))
        .await?;
    }
    Ok(())
}

/// OIDs of the capture's objects on the source (schema, functions, event
/// triggers): the copy leaves them out of the target's schema.
pub async fn object_oids(conn: &mut Connection, name: &str) -> Result<Vec<u32>, ConnError> {
    let [ddl, drp] = trigger_names(name).map(|t| quote_literal(&t));
    let s = quote_literal(&schema_name(name));
    let rows = conn
        .simple_query(&format!(
            "SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = {s} \
             UNION ALL SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n \
               ON n.oid = p.pronamespace WHERE n.nspname = {s} \
             UNION ALL SELECT oid FROM pg_catalog.pg_event_trigger WHERE evtname IN ({ddl}, {drp})"
        ))
        .await?;
    Ok(rows.iter().filter_map(|r| r.parse::<u32>(0).ok()).collect())
}
