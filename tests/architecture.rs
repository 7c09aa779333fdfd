//! The architecture's rules, checked by reading the sources: a provider is one folder.
//! The shared layers never name a provider, nothing outside a provider's folder
//! reaches for its concrete type, and the config module and the connectors do not
//! import each other.

use std::path::{Path, PathBuf};

const PROVIDERS: [&str; 6] = ["slack", "github", "pagerduty", "datadog", "aws", "gcp"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every source file under `path` (or `path` itself): Rust, and the admin page's
/// HTML, CSS and JavaScript.
fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path
            .extension()
            .is_some_and(|e| ["rs", "js", "html", "css"].iter().any(|x| e == *x))
        {
            found.push(path);
        }
    }
    found
}

/// A file's code: without comments, and without its unit tests (which may use any
/// name as data).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string (a URL) is not a comment.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(file, line)` for every line of `code` where `word` appears as a whole word,
/// ignoring case.
fn mentions(file: &Path, code: &str, word: &str) -> Vec<String> {
    code.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.to_ascii_lowercase();
            line.match_indices(word).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                let part_of_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
                // Only an end of `word` that is a letter can run on into another word.
                let open_start = word.starts_with(char::is_alphanumeric);
                let open_end = word.ends_with(char::is_alphanumeric);
                let runs_on =
                    (open_start && part_of_word(before)) || (open_end && part_of_word(after));
                !runs_on
            })
        })
        .map(|(n, line)| format!("{}:{}: {}", file.display(), n + 1, line.trim()))
        .collect()
}

#[test]
fn the_shared_layers_name_no_provider() {
    let shared = ["src/http", "src/pipeline", "src/daemon.rs", "src/tree.rs"];
    let mut found = Vec::new();
    for part in shared {
        for file in sources(&root().join(part)) {
            let code = code(&file);
            for provider in PROVIDERS {
                found.extend(mentions(&file, &code, provider));
            }
        }
    }
    assert!(
        found.is_empty(),
        "provider names in shared layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_concrete_connector_is_reached_for_outside_its_folder() {
    let mut found = Vec::new();
    for file in sources(&root().join("src")) {
        let code = code(&file);
        found.extend(mentions(&file, &code, "downcast"));
        // A provider's types are named through its module path (`slack::...`).
        let own_folder = PROVIDERS
            .iter()
            .find(|p| file.starts_with(root().join("src/connectors").join(p)));
        for provider in PROVIDERS {
            if Some(&provider) == own_folder || file.ends_with("src/connectors/mod.rs") {
                continue;
            }
            found.extend(mentions(&file, &code, &format!("{provider}::")));
        }
    }
    assert!(
        found.is_empty(),
        "concrete connectors reached for:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_config_module_and_the_connectors_do_not_import_each_other() {
    let config = code(&root().join("src/config.rs"));
    let mut found = mentions(Path::new("src/config.rs"), &config, "crate::connectors");
    for file in sources(&root().join("src/connectors")) {
        found.extend(mentions(&file, &code(&file), "crate::config"));
    }
    assert!(
        found.is_empty(),
        "imports across config and connectors:\n{}",
        found.join("\n")
    );
}
