//! The reconciler's walks over the registries: new failures above the watermark, the full
//! pass (members the index lacks, then departures), and the reading, fingerprinting and
//! adding of new failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::redis_link::Link;

use super::classify::classify;
use super::{CHUNK, KNOWN_GROUPS_MAX, Reconciler, WALK_CHUNK};
use crate::clock::now_ms;
use crate::fingerprint::{Fingerprint, fingerprint};
use crate::keyspace;
use crate::queue::rq::RqKeys;
use crate::queue::{FailedJob, JobRef, QueueBackend};
use crate::redis_error::RedisError;
use crate::triage::index::{self, Departed, Fenced, NewGroup, NewJob};

impl Reconciler {
    /// Indexes the members scored at or above the queue's watermark that it lacks.
    pub(super) async fn new_above_watermark(
        &mut self,
        conn: &mut Link,
        queue: &str,
    ) -> Result<(), RedisError> {
        let wm = self
            .watermarks
            .get(queue)
            .copied()
            .unwrap_or(f64::NEG_INFINITY);
        let mut offset = 0usize;
        loop {
            let found: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(RqKeys::failed(queue))
                .arg(index::score_arg(wm))
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(offset)
                .arg(CHUNK)
                .arg("WITHSCORES")
                .query_async(conn)
                .await?;
            offset += found.len();
            let last = found.len() < CHUNK;
            self.index_missing(conn, queue, found, true).await?;
            if last || !self.keep_lease(conn).await? {
                return Ok(());
            }
        }
    }

    /// Walks the whole registry for members the index lacks, then every group's jobs on
    /// the queue for departures.
    pub(super) async fn full_pass(
        &mut self,
        conn: &mut Link,
        queue: &str,
    ) -> Result<(), RedisError> {
        let failed = RqKeys::failed(queue);
        let mut start = 0usize;
        loop {
            let found: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(&failed)
                .arg(start)
                .arg(start + WALK_CHUNK - 1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await?;
            start += found.len();
            let last = found.len() < WALK_CHUNK;
            self.index_missing(conn, queue, found, false).await?;
            if last || !self.keep_lease(conn).await? {
                break;
            }
        }
        self.watermarks
            .entry(queue.to_string())
            .or_insert(f64::NEG_INFINITY);
        self.departures(conn, queue).await
    }

    /// Finds, among `members` of `queue`'s registry, those the index lacks (or holds with
    /// another score: failed again), reads and adds them.
    async fn index_missing(
        &mut self,
        conn: &mut Link,
        queue: &str,
        members: Vec<(String, f64)>,
        check_scores: bool,
    ) -> Result<(), RedisError> {
        let now_s = (now_ms() / 1000) as f64;
        let live: Vec<(String, f64)> = members
            .into_iter()
            .filter(|(_, s)| *s < 0.0 || *s >= now_s)
            .collect();
        if let Some(top) = live
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| s.is_finite())
            .reduce(f64::max)
        {
            let wm = self.watermarks.entry(queue.to_string()).or_insert(top);
            if top > *wm {
                *wm = top;
                redis::cmd("HSET")
                    .arg(keyspace::TRIAGE_META)
                    .arg(format!("wm:{queue}"))
                    .arg(index::score_arg(top))
                    .query_async::<()>(conn)
                    .await?;
            }
        }
        if live.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        let mapped: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keyspace::TRIAGE_JOBS)
            .arg(&ids)
            .query_async(conn)
            .await?;
        let mut missing = Vec::new();
        let mut to_check = Vec::new();
        for ((id, score), fp) in live.into_iter().zip(mapped) {
            match fp {
                None => missing.push((id, score)),
                Some(fp) if check_scores => to_check.push((id, score, fp)),
                Some(_) => {}
            }
        }
        if !to_check.is_empty() {
            let mut pipe = redis::pipe();
            for (id, _, fp) in &to_check {
                pipe.cmd("ZSCORE")
                    .arg(keyspace::triage_group_jobs(fp, queue))
                    .arg(id);
            }
            let scores: Vec<Option<f64>> = pipe.query_async(conn).await?;
            for ((id, score, _), indexed) in to_check.into_iter().zip(scores) {
                if indexed != Some(score) {
                    missing.push((id, score));
                }
            }
        }
        for chunk in missing.chunks(CHUNK) {
            self.ingest(conn, queue, chunk).await?;
        }
        Ok(())
    }

    /// Reads, fingerprints and adds failed jobs of `queue`, classifying groups new to the
    /// index.
    async fn ingest(
        &mut self,
        conn: &mut Link,
        queue: &str,
        members: &[(String, f64)],
    ) -> Result<(), RedisError> {
        let refs: Vec<JobRef> = members
            .iter()
            .map(|(id, score)| JobRef {
                queue: queue.to_string(),
                id: id.clone(),
                score: *score,
            })
            .collect();
        let jobs = match self.backend.read_jobs(&refs).await {
            Ok(jobs) => jobs,
            Err(e) => return Err(RedisError::Failed(e.to_string())),
        };
        let now = now_ms();
        let mut new_jobs = Vec::new();
        let mut candidates: HashMap<String, (FailedJob, Fingerprint)> = HashMap::new();
        for (r, job) in refs.iter().zip(jobs) {
            // Gone since it was listed (its dangling member was pruned).
            let Some(job) = job else { continue };
            let fp = fingerprint(&job.job_type, &job.traceback);
            new_jobs.push(NewJob {
                id: r.id.clone(),
                queue: queue.to_string(),
                score: r.score,
                failed_at_ms: job.failed_at_ms.unwrap_or(now),
                fingerprint: fp.id.clone(),
            });
            if !self.known_groups.contains(&fp.id) {
                candidates.entry(fp.id.clone()).or_insert((job, fp));
            }
        }
        let groups = self.new_groups(conn, candidates, now).await?;
        match index::add(conn, self.lease.token(), now, &groups, &new_jobs).await? {
            Fenced::Done(n) => {
                self.status.indexed.fetch_add(n, Ordering::Relaxed);
                if self.known_groups.len() > KNOWN_GROUPS_MAX {
                    self.known_groups.clear();
                }
                self.known_groups
                    .extend(groups.into_iter().map(|g| g.fingerprint));
            }
            Fenced::LeaseLost => self.lease.lost(),
        }
        Ok(())
    }

    /// Of the `candidates`' groups, those the index lacks, classified by the policy bound to
    /// their job type (on the blocking pool: a policy is CPU work).
    async fn new_groups(
        &mut self,
        conn: &mut Link,
        candidates: HashMap<String, (FailedJob, Fingerprint)>,
        now: u64,
    ) -> Result<Vec<NewGroup>, RedisError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for fp in candidates.keys() {
            pipe.cmd("HEXISTS")
                .arg(keyspace::triage_group(fp))
                .arg("job_type");
        }
        let exists: Vec<bool> = pipe.query_async(conn).await?;
        let mut missing = Vec::new();
        for ((fp, candidate), exists) in candidates.into_iter().zip(exists) {
            if exists {
                self.known_groups.insert(fp);
            } else {
                missing.push(candidate);
            }
        }
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let service = Arc::clone(&self.service);
        tokio::task::spawn_blocking(move || {
            missing
                .into_iter()
                .map(|(job, fp)| {
                    let (failure_type, retryable, digest) = classify(&service, &job, now);
                    NewGroup {
                        fingerprint: fp.id,
                        job_type: job.job_type,
                        exc_type: fp.exc_type,
                        failure_type,
                        retryable,
                        message: fp.message,
                        top_frame: fp.top_frame,
                        policy_digest: digest,
                        broken: fp.broken,
                        example_job_id: job.id,
                        example_message: job.exc_message,
                        example_traceback: job.traceback,
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| RedisError::Failed(format!("classifying new groups: {e}")))
    }

    /// Walks every group's jobs on `queue` (highest rank first, so removals never shift
    /// what is still to be read) and takes out those the registry no longer holds.
    async fn departures(&mut self, conn: &mut Link, queue: &str) -> Result<(), RedisError> {
        let groups: Vec<String> = redis::cmd("ZRANGE")
            .arg(keyspace::TRIAGE_GROUPS)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await?;
        let failed = RqKeys::failed(queue);
        for fp in groups {
            let key = keyspace::triage_group_jobs(&fp, queue);
            let mut end: i64 = redis::cmd("ZCARD").arg(&key).query_async(conn).await?;
            while end > 0 && self.keep_lease(conn).await? {
                let start = (end - WALK_CHUNK as i64).max(0);
                let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(start)
                    .arg(end - 1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await?;
                end = start;
                if members.is_empty() {
                    continue;
                }
                let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
                let current: Vec<Option<f64>> = redis::cmd("ZMSCORE")
                    .arg(&failed)
                    .arg(&ids)
                    .query_async(conn)
                    .await?;
                let now_s = (now_ms() / 1000) as f64;
                let departed: Vec<Departed> = members
                    .iter()
                    .zip(current)
                    .filter(|((_, indexed), now)| match now {
                        None => true,
                        Some(s) => (*s >= 0.0 && *s < now_s) || s != indexed,
                    })
                    .map(|((id, _), _)| Departed {
                        fingerprint: fp.clone(),
                        id: id.clone(),
                        queue: queue.to_string(),
                    })
                    .collect();
                match index::forget(conn, self.lease.token(), now_ms() / 1000, &departed).await? {
                    Fenced::Done(n) => {
                        self.status.departed.fetch_add(n, Ordering::Relaxed);
                    }
                    Fenced::LeaseLost => self.lease.lost(),
                }
            }
        }
        Ok(())
    }
}
