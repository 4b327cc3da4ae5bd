//! A scratch network namespace (`ip netns add`) that is removed when dropped: where the
//! integration tests and the benchmark apply rules without touching the host's.

use std::process::Command;

/// Creating the namespace, or running a command in it, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ip` could not be run.
    #[error("running ip: {0}")]
    Spawn(#[source] std::io::Error),
    /// `ip netns add` failed (not root, no `ip`, a namespace of that name exists).
    #[error("ip netns add {name} failed: {stderr}")]
    Failed {
        /// The namespace.
        name: String,
        /// `ip`'s complaint.
        stderr: String,
    },
    /// A command run in the namespace exited with an error.
    #[error("{command} failed in netns {name}: {stderr}")]
    Command {
        /// The namespace.
        name: String,
        /// The command line.
        command: String,
        /// Its complaint.
        stderr: String,
    },
}

/// A network namespace that exists until this is dropped.
#[derive(Debug)]
pub struct ScratchNetns {
    name: String,
}

impl ScratchNetns {
    /// Creates the namespace `name`, with its loopback up.
    pub fn create(name: &str) -> Result<Self, Error> {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(Error::Spawn)?;
        if !out.status.success() {
            return Err(Error::Failed {
                name: name.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let ns = ScratchNetns {
            name: name.to_string(),
        };
        let _ = Command::new("ip")
            .args(["netns", "exec", name, "ip", "link", "set", "lo", "up"])
            .status();
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `program args…` inside the namespace (`ip netns exec`) and returns its
    /// standard output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, Error> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .map_err(Error::Spawn)?;
        if !out.status.success() {
            return Err(Error::Command {
                name: self.name.clone(),
                command: format!("{program} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ip -n <namespace> <args>`, `args` split at white space: `ns.ip("link set lo up")`.
    pub fn ip(&self, args: &str) -> Result<String, Error> {
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(&args)
            .output()
            .map_err(Error::Spawn)?;
        if !out.status.success() {
            return Err(Error::Command {
                name: self.name.clone(),
                command: format!("ip {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets a sysctl inside the namespace (`net.*` ones are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), Error> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
