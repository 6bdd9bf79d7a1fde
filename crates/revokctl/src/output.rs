//! The one output layer: every command hands its results here as [`Record`]s, printed as an
//! aligned table for people or as JSON, one object per line, for scripts. Field names are the
//! same in both and are part of revokctl's contract.

use std::io::Write;

use clap::ValueEnum;
use serde_json::{Map, Value};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header.
    Table,
    /// One JSON object per result, one per line.
    Json,
}

/// One result: named fields in display order.
#[derive(Debug, Clone, Default)]
pub struct Record(Vec<(&'static str, Value)>);

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record::default()
    }

    /// Adds a field.
    pub fn field(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.0.push((name, value.into()));
        self
    }

    fn json(&self) -> String {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Value::Object(map).to_string()
    }

    fn cells(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(_, v)| match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            })
            .collect()
    }
}

/// Prints records in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: Format,
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: Format) -> Self {
        Printer { format }
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Prints a complete result set (aligned as a table).
    pub fn print(&self, records: &[Record]) {
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Json => {
                for r in records {
                    let _ = writeln!(out, "{}", r.json());
                }
            }
            Format::Table => {
                let Some(first) = records.first() else {
                    return;
                };
                let header: Vec<String> = first.0.iter().map(|(k, _)| k.to_uppercase()).collect();
                let rows: Vec<Vec<String>> = records.iter().map(Record::cells).collect();
                let mut widths: Vec<usize> = header.iter().map(String::len).collect();
                for row in &rows {
                    for (w, c) in widths.iter_mut().zip(row) {
                        *w = (*w).max(c.len());
                    }
                }
                let line = |cells: &[String]| {
                    cells
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                        .trim_end()
                        .to_owned()
                };
                let _ = writeln!(out, "{}", line(&header));
                for row in &rows {
                    let _ = writeln!(out, "{}", line(row));
                }
            }
        }
    }

    /// Prints one record of a stream as soon as it is known (tables get no alignment).
    pub fn stream(&self, record: &Record) {
        let mut out = std::io::stdout().lock();
        let _ = match self.format {
            Format::Json => writeln!(out, "{}", record.json()),
            Format::Table => writeln!(out, "{}", record.cells().join("\t")),
        };
        let _ = out.flush();
    }
}
