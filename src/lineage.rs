//! Lineage: the graph of versions and the runs that read and made them, around one version.
//! Upstream: the run that made it, that run's inputs, the runs that made those, and so on;
//! downstream: the runs that read it, what they made, the runs that read that, and so on.
//! Each direction goes `depth` runs deep, and the whole graph holds at most [`MAX_NODES`]
//! nodes, so its cost is bounded whatever the store holds. Computed by the command line only,
//! never by the mount.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::catalog::Db;
use crate::catalog::rfc3339;
use crate::catalog::runs::{self, Link, RunRow};
use crate::error::{Error, Result};

/// How many runs deep each direction goes by default.
pub const DEFAULT_DEPTH: u32 = 5;
/// The most nodes a graph holds; beyond, it is cut short and says so.
pub const MAX_NODES: usize = 1000;

/// A node: a version (by artifact and number) or a run (by id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Version(String, u64),
    Run(String),
}

impl Key {
    /// The node's id in JSON and DOT: `NAME:vN` or the run id (which has no `:`).
    pub fn id(&self) -> String {
        match self {
            Key::Version(a, n) => format!("{a}:v{n}"),
            Key::Run(id) => id.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct VersionNode {
    pub artifact: String,
    pub number: u64,
    pub type_name: Option<String>,
    pub deleted: bool,
}

#[derive(Clone, Debug)]
pub enum Node {
    Version(VersionNode),
    Run(Box<RunRow>),
}

/// An edge: a version into the run that read it (input), or a run into the version it
/// committed (output; `unchanged` when its commit found the version already there).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: Key,
    pub to: Key,
    pub output: bool,
    pub unchanged: bool,
}

pub struct Graph {
    pub root: Key,
    pub depth: u32,
    pub nodes: BTreeMap<Key, Node>,
    pub edges: BTreeSet<Edge>,
    /// Whether [`MAX_NODES`] cut the graph short.
    pub truncated: bool,
}

impl Graph {
    fn version(&mut self, l: &Link) -> Option<Key> {
        let key = Key::Version(l.artifact.clone(), l.number);
        if !self.nodes.contains_key(&key) {
            if self.nodes.len() >= MAX_NODES {
                self.truncated = true;
                return None;
            }
            let node = VersionNode {
                artifact: l.artifact.clone(),
                number: l.number,
                type_name: l.type_name.clone(),
                deleted: l.deleted,
            };
            self.nodes.insert(key.clone(), Node::Version(node));
        }
        Some(key)
    }

    fn run(&mut self, conn: &Db, id: &str, dead: &[(String, i64)]) -> Result<Option<Key>> {
        let key = Key::Run(id.to_string());
        if !self.nodes.contains_key(&key) {
            if self.nodes.len() >= MAX_NODES {
                self.truncated = true;
                return Ok(None);
            }
            let Some(row) = runs::get(conn, id)? else {
                return Ok(None);
            };
            let row = crate::runs::settled(row, dead);
            self.nodes.insert(key.clone(), Node::Run(Box::new(row)));
        }
        Ok(Some(key))
    }
}

/// The lineage of version `root`, `depth` runs deep each way. Every run in it is shown with
/// all it read and made; the walk goes on upstream from the inputs of the runs it met going
/// upstream, and downstream from the outputs of those it met going downstream. `dead` are
/// runs found crashed but not marked so in the catalog (see `runs::settle`).
pub fn build(conn: &Db, root: VersionNode, depth: u32, dead: &[(String, i64)]) -> Result<Graph> {
    let root_key = Key::Version(root.artifact.clone(), root.number);
    let mut g = Graph {
        root: root_key.clone(),
        depth,
        nodes: BTreeMap::from([(root_key.clone(), Node::Version(root))]),
        edges: BTreeSet::new(),
        truncated: false,
    };
    let mut runs_done = BTreeSet::new();
    for upstream in [true, false] {
        let mut seen = BTreeSet::from([root_key.clone()]);
        let mut frontier = vec![root_key.clone()];
        for _ in 0..depth {
            let mut next = Vec::new();
            for v in &frontier {
                let Key::Version(artifact, number) = v else {
                    continue;
                };
                let links = match upstream {
                    true => runs::producers_of(conn, artifact, *number)?,
                    false => runs::consumers_of(conn, artifact, *number)?,
                };
                for link in links {
                    let Some(run) = g.run(conn, &link.run, dead)? else {
                        continue;
                    };
                    let (inputs, outputs) = if runs_done.insert(run.clone()) {
                        let inputs = runs::inputs_of(conn, &link.run)?;
                        let outputs = runs::outputs_of(conn, &link.run)?;
                        g.link_run(&run, &inputs, &outputs);
                        (inputs, outputs)
                    } else {
                        (Vec::new(), Vec::new())
                    };
                    // Onwards: from what the run read (upstream) or made (downstream).
                    let onwards = if upstream { inputs } else { outputs };
                    for l in onwards {
                        let k = Key::Version(l.artifact.clone(), l.number);
                        if g.nodes.contains_key(&k) && seen.insert(k.clone()) {
                            next.push(k);
                        }
                    }
                }
            }
            frontier = next;
        }
    }
    Ok(g)
}

impl Graph {
    /// Adds run `run`'s inputs and outputs, with their edges.
    fn link_run(&mut self, run: &Key, inputs: &[Link], outputs: &[Link]) {
        for l in inputs {
            if let Some(v) = self.version(l) {
                self.edges.insert(Edge {
                    from: v,
                    to: run.clone(),
                    output: false,
                    unchanged: false,
                });
            }
        }
        for l in outputs {
            if let Some(v) = self.version(l) {
                self.edges.insert(Edge {
                    from: run.clone(),
                    to: v,
                    output: true,
                    unchanged: !l.made,
                });
            }
        }
    }
}

fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// A run's summary as the lineage shows it.
fn run_node_json(r: &RunRow) -> Value {
    json!({"id": r.id, "kind": "run", "run": r.id, "name": r.name, "group": opt(&r.group),
        "job_type": opt(&r.job_type), "state": r.state, "started": rfc3339(r.started_ns),
        "ended": r.ended_ns.map(rfc3339)})
}

pub fn to_json(g: &Graph) -> Value {
    let nodes: Vec<Value> = g
        .nodes
        .iter()
        .map(|(k, n)| match n {
            Node::Version(v) => json!({"id": k.id(), "kind": "version", "ref": k.id(),
                "artifact": v.artifact, "version": format!("v{}", v.number),
                "type": v.type_name, "exists": !v.deleted}),
            Node::Run(r) => run_node_json(r),
        })
        .collect();
    let edges: Vec<Value> = g
        .edges
        .iter()
        .map(|e| {
            json!({"from": e.from.id(), "to": e.to.id(),
                "kind": if e.output { "output" } else { "input" }, "unchanged": e.unchanged})
        })
        .collect();
    json!({"ref": g.root.id(), "depth": g.depth, "truncated": g.truncated,
        "nodes": nodes, "edges": edges})
}

/// A string as a DOT quoted string, shown as it is.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Graphviz reads HTML entities in labels: `&` stands for itself only as `&amp;`.
            '&' => out.push_str("&amp;"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Fill colours of runs by state, and of versions.
fn run_colour(state: &str) -> &'static str {
    match state {
        "finished" => "#d3f0d3",
        "failed" => "#f6d0d0",
        "killed" | "crashed" => "#fbe0c4",
        _ => "#fff2b3",
    }
}

/// The graph in Graphviz's DOT language: versions as boxes, runs as ellipses coloured by
/// state, left to right in the order data flowed; the version asked about drawn heavier,
/// deleted versions dashed and grey.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::from(
        "digraph lineage {\n  rankdir=LR;\n  graph [fontname=\"Helvetica\", nodesep=0.25, ranksep=0.6];\n  node [fontname=\"Helvetica\", fontsize=11, margin=\"0.15,0.06\"];\n  edge [color=\"#666666\", arrowsize=0.7, fontname=\"Helvetica\", fontsize=9];\n",
    );
    for (k, n) in &g.nodes {
        let attrs = match n {
            Node::Version(v) => {
                let mut label = k.id();
                if let Some(t) = &v.type_name {
                    label.push_str(&format!("\n{t}"));
                }
                let mut style = "rounded,filled".to_string();
                let mut extra = String::new();
                if v.deleted {
                    label.push_str("\n(deleted)");
                    style.push_str(",dashed");
                    extra.push_str(", fontcolor=\"#777777\", color=\"#999999\"");
                }
                if *k == g.root {
                    extra.push_str(", penwidth=2.5");
                }
                format!(
                    "shape=box, style={}, fillcolor=\"{}\", label={}{extra}",
                    quoted(&style),
                    if v.deleted { "#eeeeee" } else { "#dde8f7" },
                    quoted(&label)
                )
            }
            Node::Run(r) => {
                let mut label = r.name.clone();
                if !r.job_type.is_empty() {
                    label.push_str(&format!(" [{}]", r.job_type));
                }
                label.push_str(&format!("\nrun {}: {}", r.id, r.state));
                if !r.group.is_empty() {
                    label.push_str(&format!("\ngroup {}", r.group));
                }
                format!(
                    "shape=ellipse, style=filled, fillcolor=\"{}\", label={}",
                    run_colour(&r.state),
                    quoted(&label)
                )
            }
        };
        out.push_str(&format!("  {} [{attrs}];\n", quoted(&k.id())));
    }
    for e in &g.edges {
        let style = if e.unchanged {
            " [style=dashed, label=\"unchanged\"]"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {} -> {}{style};\n",
            quoted(&e.from.id()),
            quoted(&e.to.id())
        ));
    }
    if g.truncated {
        out.push_str(&format!(
            "  label={};\n  labelloc=b;\n",
            quoted(&format!("cut short at {MAX_NODES} nodes"))
        ));
    }
    out.push_str("}\n");
    out
}

/// Renders DOT to `dest` with Graphviz's `dot`, as `format` (`svg`, `png`).
pub fn render(dot: &str, format: &str, dest: &Path) -> Result<()> {
    let what = format!("--{format} {}", dest.display());
    let mut child = match Command::new("dot")
        .arg(format!("-T{format}"))
        .arg("-o")
        .arg(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::refused(
                what,
                "Graphviz is not installed (no `dot` command); install it with \
                 `apt install graphviz`, or print the graph with --dot and render it elsewhere",
            ));
        }
        Err(e) => return Err(Error::io("dot", e)),
    };
    let written = child.stdin.take().expect("piped").write_all(dot.as_bytes());
    let out = child.wait_with_output().map_err(|e| Error::io("dot", e))?;
    if !out.status.success() || written.is_err() {
        return Err(Error::refused(
            what,
            format!(
                "Graphviz's dot failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// The graph as indented text: upstream under "made by", downstream under "read by".
pub fn to_text(g: &Graph) -> String {
    let mut out = vec![describe(g, &g.root)];
    let mut shown = BTreeSet::new();
    let before = out.len();
    upstream(g, &g.root, 1, &mut shown, &mut out);
    if out.len() == before {
        out.push("  made by no recorded run".into());
    }
    let mut shown = BTreeSet::new();
    let before = out.len();
    downstream(g, &g.root, 1, &mut shown, &mut out);
    if out.len() == before {
        out.push("  read by no recorded run".into());
    }
    if g.truncated {
        out.push(format!("(cut short at {MAX_NODES} nodes)"));
    }
    out.join("\n")
}

fn describe(g: &Graph, k: &Key) -> String {
    match g.nodes.get(k) {
        Some(Node::Version(v)) => {
            let mut s = k.id();
            if let Some(t) = &v.type_name {
                s.push_str(&format!(" ({t})"));
            }
            if v.deleted {
                s.push_str(" [deleted]");
            }
            s
        }
        Some(Node::Run(r)) => {
            let mut s = format!("run {} {:?}", r.id, r.name);
            if !r.job_type.is_empty() {
                s.push_str(&format!(" [{}]", r.job_type));
            }
            let state = match r.is_running() {
                true => r.state.clone(),
                false => crate::runs::describe_end(r),
            };
            s.push_str(&format!(", {state}"));
            s
        }
        None => k.id(),
    }
}

fn upstream(g: &Graph, v: &Key, level: usize, shown: &mut BTreeSet<Key>, out: &mut Vec<String>) {
    let pad = "  ".repeat(level);
    for e in g.edges.iter().filter(|e| e.output && e.to == *v) {
        let verb = if e.unchanged {
            "also logged by"
        } else {
            "made by"
        };
        out.push(format!("{pad}{verb} {}", describe(g, &e.from)));
        if !shown.insert(e.from.clone()) {
            continue;
        }
        for i in g.edges.iter().filter(|i| !i.output && i.to == e.from) {
            out.push(format!("{pad}  read {}", describe(g, &i.from)));
            upstream(g, &i.from, level + 2, shown, out);
        }
    }
}

fn downstream(g: &Graph, v: &Key, level: usize, shown: &mut BTreeSet<Key>, out: &mut Vec<String>) {
    let pad = "  ".repeat(level);
    for e in g.edges.iter().filter(|e| !e.output && e.from == *v) {
        out.push(format!("{pad}read by {}", describe(g, &e.to)));
        if !shown.insert(e.to.clone()) {
            continue;
        }
        for o in g.edges.iter().filter(|o| o.output && o.from == e.to) {
            let verb = if o.unchanged { "logged" } else { "made" };
            out.push(format!("{pad}  {verb} {}", describe(g, &o.to)));
            downstream(g, &o.to, level + 2, shown, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_strings_are_escaped() {
        assert_eq!(quoted("a\"b\\c\nd\te"), "\"a\\\"b\\\\c\\nd e\"");
        assert_eq!(quoted("x&amp;y"), "\"x&amp;amp;y\"");
    }
}
