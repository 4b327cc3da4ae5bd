//! The stock `kubectl` (`/usr/bin/kubectl`, or the first on `PATH`) pointed at a test
//! cluster's kubeconfig.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// Runs `kubectl --kubeconfig <file> ...`.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// The kubeconfig passed to every command.
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// A kubectl using `kubeconfig`.
    pub fn new(kubeconfig: PathBuf) -> Self {
        Kubectl { kubeconfig }
    }

    /// Runs kubectl with `args`; its stdout, or an error naming the command and its stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String, String> {
        self.run_stdin(args, "").await
    }

    /// Runs kubectl with `args` and `stdin` as its standard input.
    pub async fn run_stdin(&self, args: &[&str], stdin: &str) -> Result<String, String> {
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("kubectl not runnable: {e}"))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    /// `kubectl apply -f -` with `yaml`; panics with kubectl's error on failure.
    pub async fn apply(&self, yaml: &str) -> String {
        match self.run_stdin(&["apply", "-f", "-"], yaml).await {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// `kubectl <args> -o json`, parsed; panics on failure.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = match self.run(&args).await {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        };
        match serde_json::from_str(&out) {
            Ok(v) => v,
            Err(e) => panic!("kubectl {} printed no JSON ({e}): {out}", args.join(" ")),
        }
    }
}
