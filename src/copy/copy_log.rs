//! The data phase's own journal in the work directory: which units the
//! copy planned, and for every target transaction, before it commits, the
//! units it holds, the snapshot LSN they were read under, and the
//! replication origin and sequence number it commits with. A restarted copy
//! reads it back with each origin's progress on the target (the origin
//! advances atomically with the commit, even an asynchronous one a target
//! crash loses) and knows exactly which units are in.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::protocol::lsn::Lsn;

use super::append_file::AppendFile;
use super::CopyError;

/// A unit as the journal names it: a table by source OID and, for a ctid
/// range, its first page (ranges of a table never share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitKey {
    /// Source OID of the table.
    pub oid: u32,
    /// First page of a ctid range; `None` for the whole table.
    pub start: Option<u64>,
}

/// A planned unit: its key and, for a range, the end page (`None` for the
/// last range, which reads to the end of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedUnit {
    /// Which unit.
    pub key: UnitKey,
    /// End page of a range that is not the last.
    pub end: Option<u64>,
}

/// One target transaction the journal announced before its COMMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Index of the copy origin it commits with.
    pub origin: usize,
    /// Its sequence number, recorded as the origin's LSN at commit.
    pub seq: u64,
    /// The snapshot LSN its rows were read under.
    pub lsn: Lsn,
    /// The units it holds.
    pub units: Vec<UnitKey>,
    /// Rows and COPY bytes of each unit, in `units` order; empty when the
    /// journal line carries none.
    pub counts: Vec<(u64, u64)>,
}

/// A journal line after the plan, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A transaction announced, committed or not.
    Commit(Commit),
    /// These tables (source OIDs) are about to be emptied for a copy
    /// again: whatever was committed for them before no longer counts.
    Reset(Vec<u32>),
}

/// What an earlier run's journal says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    /// The planned units, when the plan was written out completely.
    pub plan: Option<Vec<PlannedUnit>>,
    /// Everything after the plan, in order.
    pub events: Vec<Event>,
}

impl Journal {
    /// The units whose transaction committed (and was not reset since),
    /// with the snapshot LSN each was read under, given each origin's
    /// durable progress on the target.
    pub fn committed(&self, progress: &HashMap<usize, u64>) -> HashMap<UnitKey, Lsn> {
        let mut done = HashMap::new();
        for e in &self.events {
            match e {
                Event::Commit(c) => {
                    if progress.get(&c.origin).is_some_and(|&p| c.seq <= p) {
                        for u in &c.units {
                            done.insert(*u, c.lsn);
                        }
                    }
                }
                Event::Reset(oids) => done.retain(|k: &UnitKey, _| !oids.contains(&k.oid)),
            }
        }
        done
    }

    /// Rows and COPY bytes committed (and not reset since) for the tables
    /// in `kept`: where a resumed copy's counters start, so they end at the
    /// totals an uninterrupted copy shows.
    pub fn counted(&self, progress: &HashMap<usize, u64>, kept: &HashSet<u32>) -> (u64, u64) {
        let mut counts: HashMap<UnitKey, (u64, u64)> = HashMap::new();
        for e in &self.events {
            match e {
                Event::Commit(c) => {
                    if progress.get(&c.origin).is_some_and(|&p| c.seq <= p) {
                        for (u, n) in c.units.iter().zip(&c.counts) {
                            counts.insert(*u, *n);
                        }
                    }
                }
                Event::Reset(oids) => counts.retain(|k, _| !oids.contains(&k.oid)),
            }
        }
        counts
            .iter()
            .filter(|(k, _)| kept.contains(&k.oid))
            .fold((0, 0), |(r, b), (_, (ur, ub))| (r + ur, b + ub))
    }

    /// The highest sequence number announced: a new run counts on from it,
    /// so every origin's progress only moves forward.
    pub fn last_seq(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Commit(c) => Some(c.seq),
                Event::Reset(_) => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Appends to the journal; shared by the copy workers.
pub struct CopyLog {
    file: AppendFile,
}

fn key_text(k: &UnitKey) -> String {
    match k.start {
        Some(s) => format!("{}:{s}", k.oid),
        None => format!("{}:-", k.oid),
    }
}

fn parse_key(text: &str) -> Option<UnitKey> {
    let (oid, start) = text.split_once(':')?;
    let start = match start {
        "-" => None,
        s => Some(s.parse().ok()?),
    };
    Some(UnitKey {
        oid: oid.parse().ok()?,
        start,
    })
}

impl CopyLog {
    /// Opens (creating) the journal at `path` for appending.
    pub fn open(path: &Path, db: &str) -> Result<CopyLog, CopyError> {
        Ok(CopyLog {
            file: AppendFile::open(path, db, "copy journal")?,
        })
    }

    /// Starts a new journal with the plan of a new copy, durable when this
    /// returns (a plan cut short by a crash has no `planned` line and is
    /// not believed).
    pub fn create(path: &Path, plan: &[PlannedUnit], db: &str) -> Result<CopyLog, CopyError> {
        let mut text = String::new();
        for u in plan {
            let end = u.end.map_or("-".to_string(), |e| e.to_string());
            text.push_str(&format!("unit {} {end}\n", key_text(&u.key)));
        }
        text.push_str("planned\n");
        let tmp = path.with_extension("tmp");
        let io = |e| CopyError::io(db, path, e);
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            // The rename itself must survive a power cut.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        CopyLog::open(path, db)
    }

    /// Announces a transaction before its COMMIT; durable when this returns,
    /// so a committed transaction is never missing from the journal.
    pub fn announce(&self, commit: &Commit) -> Result<(), CopyError> {
        let keys: Vec<String> = commit.units.iter().map(key_text).collect();
        // `= rows/bytes …` after the keys, one per unit.
        let counts = if commit.counts.len() == commit.units.len() {
            let c: Vec<String> = commit
                .counts
                .iter()
                .map(|(r, b)| format!("{r}/{b}"))
                .collect();
            format!(" = {}", c.join(" "))
        } else {
            String::new()
        };
        let line = format!(
            "commit {} {} {} {}{counts}\n",
            commit.origin,
            commit.seq,
            commit.lsn,
            keys.join(" ")
        );
        self.append(&line)
    }

    /// Records, durably and before they are emptied, that these tables are
    /// copied again from scratch.
    pub fn reset(&self, oids: &[u32]) -> Result<(), CopyError> {
        if oids.is_empty() {
            return Ok(());
        }
        let oids: Vec<String> = oids.iter().map(u32::to_string).collect();
        self.append(&format!("reset {}\n", oids.join(" ")))
    }

    /// The database this journal belongs to.
    pub fn db(&self) -> &str {
        self.file.db()
    }

    /// A torn last line is dropped by the reader: its transaction never
    /// committed.
    fn append(&self, line: &str) -> Result<(), CopyError> {
        self.file.append(line, true)
    }
}

/// Reads the journal at `path` (empty when there is none).
pub fn read(path: &Path, db: &str) -> Result<Journal, CopyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
        Err(e) => return Err(CopyError::io(db, path, e)),
    };
    Ok(parse(&text))
}

/// Parses a journal; lines that do not parse (a torn last one) are dropped.
pub fn parse(text: &str) -> Journal {
    let mut plan = Vec::new();
    let mut planned = false;
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        match words.next() {
            Some("unit") => {
                let key = words.next().and_then(parse_key);
                let end = match words.next() {
                    Some("-") => Some(None),
                    Some(e) => e.parse().ok().map(Some),
                    None => None,
                };
                if let (Some(key), Some(end)) = (key, end) {
                    plan.push(PlannedUnit { key, end });
                }
            }
            Some("planned") => planned = true,
            Some("commit") => {
                if let Some(c) = parse_commit(&mut words) {
                    if seen.insert((c.origin, c.seq)) {
                        events.push(Event::Commit(c));
                    }
                }
            }
            Some("reset") => {
                let oids: Option<Vec<u32>> = words.map(|w| w.parse().ok()).collect();
                if let Some(oids) = oids.filter(|o| !o.is_empty()) {
                    events.push(Event::Reset(oids));
                }
            }
            _ => {}
        }
    }
    Journal {
        plan: planned.then_some(plan),
        events,
    }
}

fn parse_commit<'a>(words: &mut impl Iterator<Item = &'a str>) -> Option<Commit> {
    let origin = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let lsn = words.next()?.parse().ok()?;
    let rest: Vec<&str> = words.collect();
    let (keys, counts) = match rest.iter().position(|w| *w == "=") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..], &[][..]),
    };
    let units: Option<Vec<UnitKey>> = keys.iter().map(|k| parse_key(k)).collect();
    let units = units?;
    let counts: Option<Vec<(u64, u64)>> = counts.iter().map(|c| parse_count(c)).collect();
    // Counts that do not parse lose the counts, not the commit.
    let counts = counts
        .filter(|c| c.len() == units.len())
        .unwrap_or_default();
    (!units.is_empty()).then_some(Commit {
        origin,
        seq,
        lsn,
        units,
        counts,
    })
}

/// `rows/bytes`.
fn parse_count(text: &str) -> Option<(u64, u64)> {
    let (rows, bytes) = text.split_once('/')?;
    Some((rows.parse().ok()?, bytes.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn key(oid: u32, start: Option<u64>) -> UnitKey {
        UnitKey { oid, start }
    }

    #[test]
    fn plan_and_commits_round_trip_and_only_durable_ones_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("copy.log");
        let plan = vec![
            PlannedUnit {
                key: key(10, None),
                end: None,
            },
            PlannedUnit {
                key: key(11, Some(0)),
                end: Some(100),
            },
            PlannedUnit {
                key: key(11, Some(100)),
                end: None,
            },
        ];
        let log = CopyLog::create(&path, &plan, "db").expect("create");
        let a = Commit {
            origin: 0,
            seq: 1,
            lsn: Lsn(0x100),
            units: vec![key(10, None)],
            counts: vec![(5, 50)],
        };
        let b = Commit {
            origin: 1,
            seq: 2,
            lsn: Lsn(0x100),
            units: vec![key(11, Some(0))],
            counts: vec![],
        };
        log.announce(&a).expect("a");
        log.announce(&b).expect("b");
        let c = Commit {
            origin: 0,
            seq: 3,
            lsn: Lsn(0x100),
            units: vec![key(12, None)],
            counts: vec![(7, 70)],
        };
        log.announce(&c).expect("c");
        log.reset(&[12]).expect("reset");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"commit 1 4 0/2"))
            .expect("torn line");
        let j = read(&path, "db").expect("read");
        assert_eq!(j.plan.as_deref(), Some(&plan[..]));
        assert_eq!(j.events.len(), 4);
        assert_eq!(j.last_seq(), 3);
        // Origin 1 never committed seq 2, table 12 was reset: only table
        // 10 is in.
        let done = j.committed(&[(0, 3), (1, 0)].into_iter().collect());
        assert_eq!(done.len(), 1);
        assert_eq!(done.get(&key(10, None)), Some(&Lsn(0x100)));
        // Only committed, unreset, kept units count; a line without counts
        // still parses.
        let progress = [(0, 3), (1, 2)].into_iter().collect();
        assert_eq!(j.counted(&progress, &HashSet::from([10, 11, 12])), (5, 50));
        assert_eq!(j.counted(&progress, &HashSet::from([11, 12])), (0, 0));
        assert_eq!(j.committed(&progress).len(), 2);
    }

    #[test]
    fn a_plan_without_its_end_is_not_believed() {
        let j = parse("unit 10:- -\nunit 11:0 5\n");
        assert_eq!(j.plan, None);
        assert_eq!(parse("garbage\n\ncommit x\n"), Journal::default());
    }
}
