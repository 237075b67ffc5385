//! The monitoring the package ships (`packaging/monitoring/`, installed in
//! `/usr/share/idlereaper/monitoring/`): the alerting rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`); every dashboard query is valid PromQL; and every
//! metric the rules and the dashboard name is one the daemon exports (a real scrape, and the
//! renderer's own list of families), or `up`, which Prometheus adds to every target.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common::*;

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/monitoring");
const RULES: &str = include_str!("../../packaging/monitoring/idlereaper-rules.yml");
const DASHBOARD: &str = include_str!("../../packaging/monitoring/idlereaper-dashboard.json");

/// Runs `promtool ARGS` in `dir`; panics with what it said unless it succeeds.
fn promtool_ok(promtool: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool).args(args).current_dir(dir).output().expect("run promtool");
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {}: {:?}\n{said}", args.join(" "), out.status);
    said
}

/// The expressions of the alerting rules: one `expr:` line each, as the file's header promises.
fn rule_expressions() -> Vec<String> {
    let exprs: Vec<String> =
        RULES.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).map(str::to_owned).collect();
    let alerts = RULES.lines().filter(|l| l.trim().starts_with("- alert: ")).count();
    assert!(alerts >= 6, "{alerts} alerts");
    assert_eq!(exprs.len(), alerts, "every rule has a one-line expr: {exprs:#?}");
    exprs
}

/// Every query of the dashboard: the panels' targets (rows' nested panels too) and the
/// templating variables' `label_values(METRIC, LABEL)`, given as `METRIC` alone.
fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("every target has an expr").to_owned());
        }
    }
    let mut variables = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().expect("templating") {
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or("");
        if let Some(args) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            variables.push(args.split(',').next().unwrap().trim().to_owned());
        }
    }
    assert!(exprs.len() >= 10 && !variables.is_empty(), "{exprs:#?} {variables:?}");
    (exprs, variables)
}

/// Removes what is between `open` and its matching `close` (nesting counted), and the strings.
fn without_groups(expr: &str, open: char, close: char) -> String {
    let (mut out, mut depth, mut quote) = (String::new(), 0, None);
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, c) if c == open => depth += 1,
            (None, c) if c == close && depth > 0 => depth -= 1,
            (None, c) if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The metric names a PromQL expression selects: identifiers outside label matchers, ranges
/// and strings, that are not functions, keywords, or the label lists of `by`, `on` and kin.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 23] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        // Aggregation operators: `sum by (l) (x)` is not a call of `sum` written as such.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let text = without_groups(&without_groups(expr, '{', '}'), '[', ']');
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    let mut skip_list = false;
    while let Some(start) = rest.find(|c: char| is_ident(c) || c == '$' || c == '(') {
        rest = &rest[start..];
        if rest.starts_with('(') {
            if skip_list {
                rest = &rest[rest.find(')').map_or(rest.len(), |i| i + 1)..]; // a label list
            } else {
                rest = &rest[1..];
            }
            skip_list = false;
            continue;
        }
        let end = rest.find(|c: char| !is_ident(c) && c != '$').unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        rest = after;
        skip_list = LABEL_LISTS.contains(&word);
        let called = after.trim_start().starts_with('(');
        let number = word.starts_with(|c: char| c.is_ascii_digit() || c == '$');
        if !(called || number || KEYWORDS.contains(&word)) {
            names.insert(word.to_owned());
        }
    }
    names
}

/// A name the daemon exports: a family of the renderer's list, or a histogram's series.
fn exported(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|f| f.ends_with("_seconds") && families.contains(f)))
}

#[test]
fn metric_names_are_read_from_promql_as_written() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(names(r#"up{job="idlereaper"} == 0"#), ["up"]);
    let e = r#"sum by (job, listener) (rate(a_total{reason!="x{y}"}[5m] offset 1d)) > 3 * b and on(job) c"#;
    assert_eq!(names(e), ["a_total", "b", "c"]);
    let e = "histogram_quantile(0.99, sum by (le) (rate(h_bucket{i=~\"$instance\"}[$__rate_interval])))";
    assert_eq!(names(e), ["h_bucket"]);
    assert_eq!(names("time() - p_start and on(job, instance) q_info"), ["p_start", "q_info"]);
    let families = BTreeSet::from(["x_seconds".to_owned(), "y_total".to_owned()]);
    assert!(exported("x_seconds_bucket", &families) && exported("y_total", &families));
    assert!(!exported("y_total_sum", &families) && !exported("z", &families));
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_the_daemon_exports() {
    let families = exported_families();
    let scraped = families_of_a_scrape();
    assert_eq!(scraped, families, "a real scrape shows every family of the renderer's list");
    let (dashboard, variables) = dashboard_queries();
    let mut used = BTreeSet::new();
    for (whence, expr) in
        rule_expressions().iter().map(|e| ("rule", e)).chain(dashboard.iter().map(|e| ("dashboard", e)))
    {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{whence} {expr}: no metric");
        for name in names {
            assert!(
                name == "up" || exported(&name, &families),
                "the {whence} query `{expr}` names {name}, which the daemon does not export: {families:?}"
            );
            used.insert(name);
        }
    }
    for name in variables {
        assert!(exported(&name, &families), "a dashboard variable reads {name}");
    }
    // The rules cover what the package says they do.
    for family in ["up", "idlereaper_reloads_total", "idlereaper_upgrades_total", "process_open_fds"] {
        assert!(used.contains(family), "nothing watches {family}");
    }
}

fn families_of_a_scrape() -> BTreeSet<String> {
    families(&busy_scrape())
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = Path::new(MONITORING);
    let said = promtool_ok(promtool, dir, &["check", "rules", "idlereaper-rules.yml"]);
    assert!(said.contains(&format!("SUCCESS: {} rules found", rule_expressions().len())), "{said}");
    let said = promtool_ok(promtool, dir, &["test", "rules", "idlereaper-rules.test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(promtool) = promtool() else { return };
    // Each query as a recording rule, with Grafana's variables given values, for promtool to
    // parse: it names the query that does not.
    let (queries, _) = dashboard_queries();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q.replace("$__rate_interval", "5m").replace("$instance", ".+");
        assert!(!q.contains('$'), "a Grafana variable left in {q}");
        rules += &format!("      - record: dashboard_query_{i}\n        expr: '{}'\n", q.replace('\'', "''"));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    let said = promtool_ok(promtool, dir.path(), &["check", "rules", "dashboard.yml"]);
    assert!(said.contains(&format!("SUCCESS: {} rules found", queries.len())), "{said}");
}
