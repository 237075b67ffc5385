//! Writing the Prometheus text format (version 0.0.4): families with their `# HELP` and
//! `# TYPE` lines, samples with escaped label values, and seconds written exactly.

use std::fmt::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use super::ListenerMetrics;

/// The text being written, the name of the family whose samples are being written, and every
/// family the text may have (the list the docs are checked against; held to it in debug builds).
pub(super) struct Exposition {
    pub(super) text: String,
    pub(super) family: &'static str,
    pub(super) families: &'static [&'static str],
}

impl Exposition {
    /// Starts the family `name`: its `# HELP` and `# TYPE` lines.
    pub(super) fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        debug_assert!(!help.contains(['\\', '\n']), "{name}: HELP text needs escaping");
        debug_assert!(
            self.families.contains(&name),
            "{name} is not in the list of families, which the docs are checked against"
        );
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self.family = name;
    }

    /// A family with one or more samples per listener; none at all without listeners.
    pub(super) fn per_listener(
        &mut self,
        listeners: &[Arc<ListenerMetrics>],
        name: &'static str,
        kind: &str,
        help: &str,
        sample: impl Fn(&mut Exposition, &ListenerMetrics),
    ) {
        if !listeners.is_empty() {
            self.family(name, kind, help);
            listeners.iter().for_each(|l| sample(self, l));
        }
    }

    /// `<family><suffix>{label="value",…} value`, with the label values escaped.
    pub(super) fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        let out = &mut self.text;
        out.push_str(self.family);
        out.push_str(suffix);
        for (i, (label, text)) in labels.iter().enumerate() {
            out.push(if i == 0 { '{' } else { ',' });
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, text);
            out.push('"');
        }
        if !labels.is_empty() {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

/// A label value as the text format writes it: `\`, `"` and newline escaped.
fn escape_label_value(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A duration in seconds, exactly to the microsecond: `0`, `1.5`, `0.000001`.
pub(super) struct Seconds(pub(super) Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.subsec_micros();
        if micros == 0 {
            return write!(f, "{}", self.0.as_secs());
        }
        let fraction = format!("{micros:06}");
        write!(f, "{}.{}", self.0.as_secs(), fraction.trim_end_matches('0'))
    }
}
