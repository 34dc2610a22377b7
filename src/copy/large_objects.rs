//! Large objects live in pg_largeobject, outside any table the COPY sees;
//! they are read through the snapshot and written with lo_put in chunks.

use crate::conn::{quote_ident, Connection, Param};

use super::CopyError;

/// Bytes read and written per round trip.
const CHUNK: usize = 1024 * 1024;

/// Copies every large object visible in `source`'s snapshot; returns the
/// number of objects and bytes copied.
pub async fn copy_all(
    source: &mut Connection,
    target: &mut Connection,
    db: &str,
    keep_owner: bool,
) -> Result<(u64, u64), CopyError> {
    let list = source
        .simple_query("SELECT oid, pg_catalog.pg_get_userbyid(lomowner) FROM pg_catalog.pg_largeobject_metadata ORDER BY oid")
        .await
        .map_err(|e| CopyError::source(db, "listing large objects", e))?;
    let (mut objects, mut bytes) = (0u64, 0u64);
    for r in &list {
        let oid: u32 = r
            .parse(0)
            .map_err(|e| CopyError::source(db, "listing large objects", e))?;
        let owner = r
            .opt_str(1)
            .map_err(|e| CopyError::source(db, "listing large objects", e))?;
        let ctx = format!("copying large object {oid}");
        // pg_dump's pre-data has normally created it already, with its
        // owner and grants.
        let created_here = target
            .execute(&format!(
                "SELECT pg_catalog.lo_create({oid}) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = {oid})"
            ))
            .await
            .map_err(|e| CopyError::target(db, &ctx, e))?
            == 1;
        let mut offset = 0u64;
        loop {
            let rows = source
                .simple_query(&format!(
                    "SELECT pg_catalog.lo_get({oid}, {offset}, {CHUNK})"
                ))
                .await
                .map_err(|e| CopyError::source(db, &ctx, e))?;
            let hex = rows
                .first()
                .ok_or_else(|| CopyError::Unexpected {
                    db: db.into(),
                    message: format!("lo_get({oid}) returned no row"),
                })?
                .str(0)
                .map_err(|e| CopyError::source(db, &ctx, e))?;
            let data = decode_bytea_hex(hex).ok_or_else(|| CopyError::Unexpected {
                db: db.into(),
                message: format!("large object {oid}: unexpected bytea text"),
            })?;
            if data.is_empty() {
                break;
            }
            target
                .execute_params(
                    &format!("SELECT pg_catalog.lo_put({oid}, {offset}, $1)"),
                    &[Param::Binary(&data)],
                )
                .await
                .map_err(|e| CopyError::target(db, &ctx, e))?;
            offset += data.len() as u64;
            bytes += data.len() as u64;
            if data.len() < CHUNK {
                break;
            }
        }
        if created_here {
            // pg_dump 17 and later dump large objects' metadata with the
            // data section, which we do not restore: comment and grants
            // come from here then.
            carry_metadata(source, target, db, oid, keep_owner).await?;
        }
        if let (true, Some(owner)) = (keep_owner && created_here, owner) {
            if let Err(e) = target
                .execute(&format!(
                    "ALTER LARGE OBJECT {oid} OWNER TO {}",
                    quote_ident(owner)
                ))
                .await
            {
                tracing::warn!(oid, "large object owner not set: {e}");
            }
        }
        objects += 1;
    }
    Ok((objects, bytes))
}

/// The comment and (with owners kept) the grants of large object `oid`.
async fn carry_metadata(
    source: &mut Connection,
    target: &mut Connection,
    db: &str,
    oid: u32,
    keep_owner: bool,
) -> Result<(), CopyError> {
    let ctx = format!("reading the comment and grants of large object {oid}");
    let rows = source
        .simple_query(&format!(
            "SELECT format('COMMENT ON LARGE OBJECT {oid} IS %L', d) \
             FROM pg_catalog.obj_description({oid}, 'pg_largeobject') d WHERE d IS NOT NULL \
             UNION ALL \
             SELECT format('GRANT %s ON LARGE OBJECT {oid} TO %s%s', a.privilege_type, \
                    CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, \
                    CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_catalog.pg_largeobject_metadata m, pg_catalog.aclexplode(m.lomacl) a \
             WHERE m.oid = {oid} AND {keep_owner} AND a.grantee <> m.lomowner"
        ))
        .await
        .map_err(|e| CopyError::source(db, &ctx, e))?;
    for r in &rows {
        let sql = r.str(0).map_err(|e| CopyError::source(db, &ctx, e))?;
        if let Err(e) = target.execute(sql).await {
            tracing::warn!(oid, "large object metadata not set ({sql}): {e}");
        }
    }
    Ok(())
}

/// Decodes bytea's hex text form (`\x0a1b`).
pub fn decode_bytea_hex(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::decode_bytea_hex;

    #[test]
    fn hex() {
        assert_eq!(decode_bytea_hex("\\x00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_bytea_hex("\\x0"), None);
        assert_eq!(decode_bytea_hex("00"), None);
        assert_eq!(decode_bytea_hex("\\xzz"), None);
    }
}
