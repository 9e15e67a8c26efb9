//! Driving a server: CSRs made before anything is timed, issuance through the API with many
//! requests in flight, and setup steps run with bounded concurrency.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ck_api_types::CreateCertificate;
use ck_domain::{KeyType, SubjectAltName};

/// Setup requests in flight at once.
const SETUP_CONCURRENCY: usize = 32;
/// Progress lines on stderr, at most this often.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// A P-256 key and CSR for `name(i)`, for every i in 0..count (blocking: call off the async
/// threads).
pub(crate) fn make_csrs(count: usize, name: impl Fn(usize) -> String) -> anyhow::Result<Vec<String>> {
    (0..count)
        .map(|i| {
            let names = vec![SubjectAltName::parse(&name(i))?];
            Ok(ck_pki::ServerKey::generate(KeyType::EcdsaP256, &names)?.csr_pem)
        })
        .collect()
}

/// `count` P-256 CSRs for `host<i>.<domain>`, made on a blocking thread before anything is timed.
pub(crate) async fn prepare_csrs(count: usize, domain: &str) -> anyhow::Result<Vec<String>> {
    eprintln!("preparing {count} CSRs…");
    let domain = domain.to_owned();
    tokio::task::spawn_blocking(move || make_csrs(count, |i| format!("host{i}.{domain}"))).await?
}

/// Creates a certificate from each CSR through the API, `concurrency` requests in flight spread
/// over `clients` (one per node), each waiting for its issuance; the sorted latencies and the
/// time taken.
pub(crate) async fn issue_all(
    clients: &[ck_client::Client],
    csrs: Arc<Vec<String>>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let bar = indicatif::ProgressBar::new(csrs.len() as u64);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let client = clients[task % clients.len()].clone();
        let (csrs, next, bar) = (csrs.clone(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(csr) = csrs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let request = CreateCertificate {
                    csr: Some(csr.clone()),
                    ..CreateCertificate::default()
                };
                let sent = Instant::now();
                let answer = client
                    .create_certificate(&request, Some(Duration::from_secs(60)))
                    .await?;
                if answer.certificate.status != "active" {
                    bail!(
                        "certificate {} ended {}: {:?}",
                        answer.certificate.id,
                        answer.certificate.status,
                        answer.job.last_error
                    );
                }
                latencies.push(sent.elapsed());
                bar.inc(1);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(csrs.len());
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    latencies.sort();
    Ok((latencies, elapsed))
}

/// Runs `task(i)` for every i in 0..n with `SETUP_CONCURRENCY` in flight, with a progress line
/// every few seconds; stops at the first error.
pub(crate) async fn bounded<T, F, Fut>(label: &str, n: usize, task: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let task = Arc::new(task);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..SETUP_CONCURRENCY.min(n) {
        let (task, next, done, failed) = (task.clone(), next.clone(), done.clone(), failed.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || failed.load(Ordering::Relaxed) {
                    return Ok::<_, anyhow::Error>(results);
                }
                match task(i).await {
                    Ok(value) => results.push((i, value)),
                    Err(error) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let progress = tokio::spawn({
        let (done, label) = (done.clone(), label.to_owned());
        async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let count = done.load(Ordering::Relaxed);
                let rate = count as f64 / started.elapsed().as_secs_f64();
                eprintln!("  {label}: {count}/{n} ({rate:.0}/s)");
            }
        }
    });
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(results)) => {
                for (i, value) in results {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(value);
                    }
                }
            }
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(panic) => {
                first_error.get_or_insert(anyhow::anyhow!("a setup task failed: {panic}"));
            }
        }
    }
    progress.abort();
    if let Some(error) = first_error {
        return Err(error.context(format!("setup step '{label}' failed")));
    }
    eprintln!("  {label}: {n}/{n} in {:.1} s", started.elapsed().as_secs_f64());
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.with_context(|| format!("setup step '{label}' lost item {i}")))
        .collect()
}
