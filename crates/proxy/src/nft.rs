//! Running `nft`: applying a script atomically (`nft -f -`, the script on stdin), listing
//! rkube-proxy's chains and sets, and deleting its table (`--cleanup`). Only ever writes
//! `table ip rkube-proxy`; other tables are never touched (the listing of chain and set
//! names covers the `ip` family, and only rkube-proxy's are kept).

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::ruleset::{Existing, FAMILY, TABLE};

/// How much of nft's stderr an error keeps.
const STDERR_LIMIT: usize = 4000;

/// How long one nft run may take before it is killed: a hung nft would otherwise stall the
/// sync loop. Generous: a full sync of 10,000 Services takes about a second on an idle
/// machine, and a loaded one can be many times slower.
const NFT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What went wrong running `nft`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started (not installed, not executable).
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// nft ran longer than its time limit and was killed; nothing is known to be applied.
    #[error("nft {action} did not finish within {seconds} s and was killed")]
    Timeout {
        /// What was asked.
        action: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// Talking to the running program failed.
    #[error("talking to nft: {0}")]
    Io(#[source] std::io::Error),
    /// nft exited non-zero: the whole transaction was rejected, nothing changed.
    #[error("nft {action} failed ({status}): {stderr}")]
    Failed {
        /// What was asked (`-f -`, `list chains and sets`).
        action: &'static str,
        /// The exit status.
        status: std::process::ExitStatus,
        /// nft's complaint (its start, when long).
        stderr: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run `nft`: the program and an optional command prefix, e.g.
/// `ip netns exec NS` to act in another network namespace (tests, benchmarks).
#[derive(Debug, Clone)]
pub struct Nft {
    program: String,
    prefix: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            program: "nft".to_string(),
            prefix: Vec::new(),
        }
    }
}

impl Nft {
    /// `nft` from `PATH`, in this network namespace.
    pub fn new() -> Self {
        Nft::default()
    }

    /// `program` (a path or a name on `PATH`), in this network namespace.
    pub fn with_program(program: &str) -> Self {
        Nft {
            program: program.to_string(),
            prefix: Vec::new(),
        }
    }

    /// `nft` run through `ip netns exec namespace`.
    pub fn in_netns(namespace: &str) -> Self {
        Nft {
            program: "nft".to_string(),
            prefix: vec!["ip".into(), "netns".into(), "exec".into(), namespace.into()],
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String> {
        // The child is killed when the timed-out future drops it (kill_on_drop).
        tokio::time::timeout(NFT_TIMEOUT, self.run_once(action, args, stdin))
            .await
            .unwrap_or(Err(Error::Timeout {
                action,
                seconds: NFT_TIMEOUT.as_secs(),
            }))
    }

    async fn run_once(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String> {
        let mut cmd = self.command(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: self.prefix.first().unwrap_or(&self.program).clone(),
            source,
        })?;
        let mut written = Ok(());
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads all of stdin before it answers, so writing first cannot deadlock
            // on a full stdout pipe. If nft dies early, its own complaint says more than
            // the broken pipe, so the write error waits for its exit status.
            written = pipe.write_all(text.as_bytes()).await;
            if written.is_ok() {
                written = pipe.shutdown().await;
            }
        }
        let out = child.wait_with_output().await.map_err(Error::Io)?;
        if out.status.success() {
            written.map_err(Error::Io)?;
        } else {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.len() > STDERR_LIMIT {
                let mut end = STDERR_LIMIT;
                while !stderr.is_char_boundary(end) {
                    end -= 1;
                }
                stderr.truncate(end);
                stderr.push('…');
            }
            return Err(Error::Failed {
                action,
                status: out.status,
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies `script` as one transaction: all of it or, on error, none of it.
    pub async fn apply(&self, script: &str) -> Result<()> {
        self.run("-f -", &["-f", "-"], Some(script)).await.map(drop)
    }

    /// Checks `script` without applying it (`nft -c -f -`).
    pub async fn check(&self, script: &str) -> Result<()> {
        self.run("-c -f -", &["-c", "-f", "-"], Some(script))
            .await
            .map(drop)
    }

    /// The chains and sets the table holds now (nothing when it does not exist).
    ///
    /// From `list chains` and `list sets` (terse: no elements), which print names and
    /// hooks only: listing the table prints every rule, and took 0.8 s at 10,000 Services.
    pub async fn existing(&self) -> Result<Existing> {
        let script = format!("list chains {FAMILY}\nlist sets {FAMILY}\n");
        let text = self
            .run("list chains and sets", &["-t", "-f", "-"], Some(&script))
            .await?;
        Ok(parse_listing(&text))
    }

    /// Deletes the table with everything in it; `false` when there was none.
    pub async fn cleanup(&self) -> Result<bool> {
        match self
            .run("delete table", &["delete", "table", FAMILY, TABLE], None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether nft failed because the table (or chain) does not exist.
fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Failed { stderr, .. } if stderr.contains("No such file or directory"))
}

/// The names of rkube-proxy's chains and sets in an `nft list` listing (of the table, or
/// of all chains or sets of the family: other tables' are skipped).
pub fn parse_listing(text: &str) -> Existing {
    let mut out = Existing::default();
    let mut ours = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", family, name, "{"] => ours = *family == FAMILY && *name == TABLE,
            ["chain", name, "{"] if ours => out.chains.push(name.to_string()),
            ["set", name, "{"] if ours => out.sets.push(name.to_string()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_give_chain_and_set_names() {
        let text = "table ip rkube-proxy {\n\
            \tcomment \"rules for rkube-proxy\"\n\
            \tmap service-ips {\n\
            \t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\
            \t}\n\
            \tset affinity-AAAA-ns/web/tcp/__10.0.0.1/80 {\n\
            \t\ttype ipv4_addr\n\
            \t}\n\
            \tchain nat-prerouting {\n\
            \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
            \t}\n\
            \tchain service-ABCDEFGH-ns/web/tcp/ {\n\
            \t}\n\
            }\n\
            table ip other {\n\
            \tchain mine {\n\
            \t}\n\
            \tset theirs {\n\
            \t}\n\
            }\n";
        let e = parse_listing(text);
        assert_eq!(e.chains, ["nat-prerouting", "service-ABCDEFGH-ns/web/tcp/"]);
        assert_eq!(e.sets, ["affinity-AAAA-ns/web/tcp/__10.0.0.1/80"]);
    }

    #[test]
    fn not_found_is_recognised() {
        let status = std::process::Command::new("false")
            .status()
            .expect("`false` runs");
        let e = Error::Failed {
            action: "list table",
            status,
            stderr: "Error: No such file or directory; did you mean table 'x'?".into(),
        };
        assert!(is_not_found(&e));
    }

    #[tokio::test]
    async fn a_missing_program_says_which() {
        let nft = Nft {
            program: "/nonexistent/nft".into(),
            prefix: Vec::new(),
        };
        let e = nft.apply("").await.unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/nft"),
            "error names the program: {e}"
        );
    }
}
