//! Splitting a command written as one string into its argv, the way a POSIX
//! shell (and Python's `shlex.split`, which the v0.8 CLI used) does: blanks
//! separate words; `'...'` is literal; in `"..."` a backslash escapes only
//! `$`, `` ` ``, `"`, `\` and a newline; outside quotes a backslash escapes
//! any character. No expansion of variables, globs or `~`: the command runs
//! in the sandbox, not here.

/// The words of `s`, or why it cannot be split.
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    // `Some` once a word has started, even an empty one (`''`).
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated single quote (')".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(e @ ('$' | '`' | '"' | '\\')) => w.push(e),
                            Some(other) => {
                                w.push('\\');
                                w.push(other);
                            }
                            None => return Err("unterminated double quote (\")".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated double quote (\")".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                // A line continuation joins the lines.
                Some('\n') => {}
                Some(e) => word.get_or_insert_with(String::new).push(e),
                None => return Err("a backslash at the end escapes nothing".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    fn ok(s: &str) -> Vec<String> {
        split(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn the_seed_commands() {
        assert_eq!(
            ok("pip install -r /workspace/requirements.txt"),
            ["pip", "install", "-r", "/workspace/requirements.txt"]
        );
        assert_eq!(
            ok("python /workspace/agent.py"),
            ["python", "/workspace/agent.py"]
        );
    }

    #[test]
    fn quotes_group_and_keep_blanks() {
        assert_eq!(
            ok("sh -c 'echo installing; exit 3'"),
            ["sh", "-c", "echo installing; exit 3"]
        );
        assert_eq!(ok(r#"echo "a  b" c"#), ["echo", "a  b", "c"]);
        assert_eq!(ok(r#"a'b'"c"d"#), ["abcd"]);
        assert_eq!(ok("x '' \"\""), ["x", "", ""]);
        assert_eq!(ok("  \t lead   trail \n"), ["lead", "trail"]);
        assert!(ok("").is_empty());
    }

    #[test]
    fn backslashes_as_in_sh() {
        assert_eq!(ok(r"a\ b c"), ["a b", "c"]);
        assert_eq!(ok(r"'a\b'"), [r"a\b"]);
        assert_eq!(ok(r#""a\"b\\c\$d\e""#), [r#"a"b\c$d\e"#]);
        assert_eq!(ok("a\\\nb"), ["ab"]);
        assert_eq!(ok(r#"it\'s"#), ["it's"]);
        assert_eq!(ok("$HOME *"), ["$HOME", "*"]);
    }

    #[test]
    fn unterminated_input_is_an_error() {
        assert!(split("'abc").is_err());
        assert!(split("\"abc").is_err());
        assert!(split("abc\\").is_err());
    }
}
