//! Printing objects as kubectl does: server-side Tables as aligned columns (upper-case headers,
//! three spaces between columns), objects as YAML or JSON.

use serde_json::Value;

/// `-o` of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
    Wide,
    Name,
}

/// The columns of a Table to print: priority 0, or all with `wide`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// (index in the row cells, header)
    pub shown: Vec<(usize, String)>,
    pub with_namespace: bool,
}

impl Columns {
    pub fn from_table(table: &Value, wide: bool, with_namespace: bool) -> Self {
        let shown = table
            .get("columnDefinitions")
            .and_then(Value::as_array)
            .map(|defs| {
                defs.iter()
                    .enumerate()
                    .filter(|(_, d)| wide || d.get("priority").and_then(Value::as_i64) == Some(0))
                    .map(|(i, d)| {
                        let name = d.get("name").and_then(Value::as_str).unwrap_or("");
                        (i, name.to_ascii_uppercase())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Columns {
            shown,
            with_namespace,
        }
    }

    pub fn header(&self) -> Vec<String> {
        let mut header = Vec::new();
        if self.with_namespace {
            header.push("NAMESPACE".to_owned());
        }
        header.extend(self.shown.iter().map(|(_, h)| h.clone()));
        header
    }

    /// The cells of every row of a Table.
    pub fn rows(&self, table: &Value) -> Vec<Vec<String>> {
        let rows = table.get("rows").and_then(Value::as_array);
        rows.into_iter()
            .flatten()
            .map(|row| {
                let cells = row.get("cells").and_then(Value::as_array);
                let mut line = Vec::new();
                if self.with_namespace {
                    line.push(
                        row.pointer("/object/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    );
                }
                for (index, _) in &self.shown {
                    line.push(cell_text(cells.and_then(|c| c.get(*index))));
                }
                line
            })
            .collect()
    }
}

fn cell_text(cell: Option<&Value>) -> String {
    match cell {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(other) => other.to_string(),
    }
}

/// Aligned lines: every column but the last padded to its widest cell plus three spaces.
pub fn format_rows(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c + 1 == line.len() {
                text.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count()) + 3;
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// An object (or list) as YAML, as `kubectl get -o yaml` prints it.
pub fn to_yaml(value: &Value) -> String {
    match serde_saphyr::to_string(value) {
        Ok(text) => text,
        // Every JSON value has a YAML form; fall back to JSON (which is YAML too) regardless.
        Err(_) => to_json(value),
    }
}

/// An object (or list) as indented JSON.
pub fn to_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// A `v1 List` of objects, as kubectl prints several objects.
pub fn list_of(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "metadata": {"resourceVersion": ""},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> Value {
        json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "priority": 0},
                {"name": "Age", "priority": 0},
                {"name": "Status", "priority": 0},
                {"name": "Extra", "priority": 1},
            ],
            "rows": [
                {"cells": ["demo", "5m", "Running", "x"], "object": {"metadata": {"namespace": "default"}}},
                {"cells": ["a-much-longer-name", "10s", "Stopped", "y"], "object": {"metadata": {"namespace": "ns2"}}},
            ]
        })
    }

    #[test]
    fn tables_print_like_kubectl() {
        let columns = Columns::from_table(&table(), false, false);
        let mut lines = vec![columns.header()];
        lines.extend(columns.rows(&table()));
        assert_eq!(
            format_rows(&lines),
            "NAME                 AGE   STATUS\n\
             demo                 5m    Running\n\
             a-much-longer-name   10s   Stopped\n"
        );
        let wide = Columns::from_table(&table(), true, true);
        let mut lines = vec![wide.header()];
        lines.extend(wide.rows(&table()));
        let text = format_rows(&lines);
        assert!(text.starts_with("NAMESPACE   NAME"), "{text}");
        assert!(
            text.contains("ns2         a-much-longer-name   10s   Stopped   y"),
            "{text}"
        );
    }

    #[test]
    fn yaml_of_an_object() {
        let yaml = to_yaml(&json!({"kind": "VirtualMachine", "metadata": {"name": "demo"}}));
        assert!(yaml.contains("kind: VirtualMachine"), "{yaml}");
        assert!(yaml.contains("name: demo"), "{yaml}");
    }
}
