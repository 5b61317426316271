//! Settings outside the command line: the `--config` TOML layer, the template
//! `burrow ROLE config-file` prints, and the settings `/configz` lists, all read from clap's
//! own definitions so they cannot drift from the flags.

use std::ffi::OsString;

use super::Cli;

/// Settings whose values `/configz` hides (see [`crate::ops::redact`]).
const SECRET_SETTINGS: &[&str] = &["access_key", "auth"];

/// Every setting of the subcommand `matches` parsed, as `(flag name, value)`, defaults
/// included and secrets redacted: what `/configz` shows. Several values are comma-joined.
pub fn settings(matches: &clap::ArgMatches) -> Vec<(String, String)> {
    let Some((_, sub)) = matches.subcommand() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for id in sub.ids() {
        let id = id.as_str();
        let Ok(Some(raw)) = sub.try_get_raw(id) else { continue };
        let values: Vec<String> = raw
            .map(|v| {
                let v = v.to_string_lossy();
                if SECRET_SETTINGS.contains(&id) {
                    crate::ops::redact(&v)
                } else {
                    v.into_owned()
                }
            })
            .collect();
        out.push((id.replace('_', "-"), values.join(",")));
    }
    out
}

const FILE_COMMANDS: &[&str] = &["hub", "expose", "reach"];

/// The commented TOML template `burrow ROLE config-file` prints: every setting of `role` a
/// file may hold, with its help, its environment variable and its default, commented out.
pub fn config_template(role: &str) -> String {
    use clap::CommandFactory;
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(role) else {
        return String::new();
    };
    let mut out = format!(
        "# burrow {role} settings for --config FILE. Keys are flag names (`-` or `_`);\n\
         # precedence: flag > environment > this file > default. Uncomment to change.\n"
    );
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_positional() || matches!(id, "help" | "version" | "config") {
            continue;
        }
        let key = id.replace('_', "-");
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        out.push('\n');
        for line in help.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        if let Some(env) = arg.get_env() {
            out.push_str(&format!("# env: {}\n", env.to_string_lossy()));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let value = match arg.get_action() {
            clap::ArgAction::SetTrue => "false".to_string(),
            clap::ArgAction::Append => format!(
                "[{}]",
                defaults.iter().map(|d| toml_string(d)).collect::<Vec<_>>().join(", ")
            ),
            _ => match defaults.first() {
                Some(d) if d.parse::<i64>().is_ok() => d.clone(),
                Some(d) => toml_string(d),
                None => "\"\"".into(),
            },
        };
        out.push_str(&format!("# {key} = {value}\n"));
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Whether `key` of a config file names a setting of `role` (`-` and `_` alike).
fn is_setting(role: &str, key: &str) -> bool {
    use clap::CommandFactory;
    let id = key.replace('-', "_");
    Cli::command().find_subcommand(role).is_some_and(|sub| {
        sub.get_arguments()
            .any(|arg| arg.get_id().as_str() == id && !arg.is_positional())
    })
}

/// Inserts the `--config` file's settings as flags right after the subcommand, unless the
/// environment sets them. Flags given on the command line come later and win
/// (`args_override_self`), which yields flag > env > file > default.
pub fn args_with_config(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let text: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let from_args = text.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=")
            .map(str::to_string)
            .or_else(|| (a == "--config").then(|| text.get(i + 1).cloned()).flatten())
    });
    let Some(path) = from_args.or_else(|| std::env::var("BURROW_CONFIG").ok()) else {
        return Ok(argv);
    };
    let Some(position) = text.iter().skip(1).position(|a| FILE_COMMANDS.contains(&a.as_str())) else {
        return Ok(argv);
    };
    let contents = std::fs::read_to_string(&path).map_err(|e| format!("config file {path}: {e}"))?;
    let table: toml::Table = contents.parse().map_err(|e| format!("config file {path}: {e}"))?;
    let mut injected = Vec::new();
    let role = text[position + 1].as_str();
    for (key, value) in &table {
        if key != "config" && !is_setting(role, key) {
            return Err(format!(
                "config file {path}: unknown key {key:?} (`burrow {role} config-file` lists them)"
            ));
        }
        let flag = key.replace('_', "-");
        if flag == "config" || std::env::var_os(format!("BURROW_{}", flag.to_uppercase().replace('-', "_"))).is_some() {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => injected.push(format!("--{flag}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => injected.push(format!("--{flag}={s}")),
                toml::Value::Integer(n) => injected.push(format!("--{flag}={n}")),
                toml::Value::Float(f) => injected.push(format!("--{flag}={f}")),
                other => return Err(format!("config file {path}: unsupported value for {key}: {other}")),
            }
        }
    }
    let mut out = argv;
    let at = position + 2;
    out.splice(at..at, injected.into_iter().map(OsString::from));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use clap::Parser;

    #[test]
    fn config_file_values_yield_to_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("burrow.toml");
        std::fs::write(
            &path,
            "domain = \"file.example\"\nallow_plaintext = true\nport-range = \"30000-30010\"\n",
        )
        .unwrap();
        let argv: Vec<OsString> = [
            "burrow",
            "--config",
            path.to_str().unwrap(),
            "hub",
            "--domain",
            "flag.example",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let cli = Cli::try_parse_from(args_with_config(argv).unwrap()).unwrap();
        let Command::Hub(hub) = cli.command else {
            panic!("expected hub")
        };
        assert_eq!(hub.domain, "flag.example", "flag beats file");
        assert!(hub.allow_plaintext, "file beats default");
        assert_eq!(hub.port_range, (30000, 30010));
    }

    #[test]
    fn config_templates_list_every_setting_and_parse_back() {
        for role in FILE_COMMANDS {
            let template = config_template(role);
            assert!(template.contains("# env: BURROW_LOG_LEVEL"), "{role}");
            let uncommented: String = template
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .filter(|l| {
                    l.split_once(" = ")
                        .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
                })
                .map(|l| format!("{l}\n"))
                .collect();
            let table: toml::Table = uncommented
                .parse()
                .unwrap_or_else(|e| panic!("{role}: {e}\n{uncommented}"));
            assert!(table.keys().all(|k| is_setting(role, k)), "{role}");
            assert!(table.len() > 10, "{role}: {table:?}");
        }
        assert!(config_template("hub").contains("# listen = \"0.0.0.0:7443\""));
        assert!(config_template("hub").contains("# allow-plaintext = false"));
        assert!(config_template("expose").contains("# lanes = 4"));
    }

    #[test]
    fn settings_include_defaults_and_hide_secrets() {
        use clap::{CommandFactory, FromArgMatches};
        let argv = ["burrow", "hub", "--auth", "alice:s3cret", "--domain", "example.test"];
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&matches).unwrap();
        let settings = settings(&matches);
        let get = |name: &str| settings.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("auth"), Some("alice:xxxxx"));
        assert_eq!(get("domain"), Some("example.test"));
        assert_eq!(get("listen"), Some("0.0.0.0:7443"), "defaults are settings too");
        assert!(!settings.iter().any(|(_, v)| v.contains("s3cret")));
    }

    #[test]
    fn unknown_config_keys_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("burrow.toml");
        std::fs::write(&path, "no_such_flag = 1\n").unwrap();
        let argv: Vec<OsString> = ["burrow", "hub", "--config", path.to_str().unwrap()]
            .into_iter()
            .map(OsString::from)
            .collect();
        let err = args_with_config(argv).unwrap_err();
        assert!(err.contains("unknown key \"no_such_flag\""), "{err}");
    }
}
