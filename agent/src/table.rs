//! Aligned text tables for the reporting commands.

use std::fmt::Write;

/// Output formats of the reporting commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for other tools.
    Json,
}

/// Rows of cells printed in aligned columns, every line prefixed with an indent.
#[derive(Debug, Default)]
pub struct Table {
    indent: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`.
    pub fn new<const N: usize>(indent: usize, header: [&str; N]) -> Self {
        Self { indent, rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, columns padded to their widest cell; the last column unpadded.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = " ".repeat(self.indent);
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `-` for an absent value, as `ip` and `kubectl` print it.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_and_indents() {
        let mut table = Table::new(2, ["A", "LONG HEADER", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "last".into()]);
        assert_eq!(table.render(), "  A          LONG HEADER  C\n  wide cell  x            last\n");
        assert_eq!(or_dash(None::<u32>), "-");
        assert_eq!(or_dash(Some(3)), "3");
    }
}
