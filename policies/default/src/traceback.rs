//! Finding the outermost exception in a Python traceback, as RQ records it.
//!
//! RQ 2.x stores `''.join(traceback.format_exception(*exc_info))`. Python prints a chain of
//! exceptions oldest first, so the exception that actually escaped the job (the *outermost*
//! one) is the one after the **last** top-level header:
//!
//! ```text
//! Traceback (most recent call last):            <- inner (the cause), printed first
//!   File "app/tasks.py", line 3, in fetch
//! ConnectionRefusedError: [Errno 111] Connection refused
//!
//! The above exception was the direct cause of the following exception:
//!
//! Traceback (most recent call last):            <- last header: the outermost exception
//!   File "app/tasks.py", line 9, in charge
//!     raise PaymentError("gateway down") from e
//!     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
//! app.errors.PaymentError: gateway down         <- `Type: message`
//! second line of the message                    <- message continues…
//! a note added with add_note()                  <- …and PEP 678 notes follow it
//! ```
//!
//! An exception group is printed with a `  + Exception Group Traceback (most recent call
//! last):` header and every line of its block prefixed with `  | `; its sub-exceptions follow
//! in deeper, `|`-prefixed blocks which never count as outermost: the group itself is.
//!
//! This is plain string scanning (no regex): linear in the input, never panics.

/// The header line of a plain traceback (and of every chained one).
const HEADER: &str = "Traceback (most recent call last):";
/// The header of a top-level exception group, after its leading spaces.
const GROUP_HEADER: &str = "+ Exception Group Traceback (most recent call last):";
/// Longest text accepted as an exception type (a qualified class name).
const MAX_TYPE_LEN: usize = 512;

/// The outermost exception of a traceback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedException<'a> {
    /// The type as Python printed it, qualified when it was
    /// (`requests.exceptions.ConnectionError`, `orders.models.Order.DoesNotExist`).
    pub exc_type: &'a str,
    /// The message: the rest of the `Type: message` line, then every following line of the
    /// block (continuation lines of a multi-line message, exception notes), joined with `\n`,
    /// leading and trailing blank lines removed. Empty when Python printed only the type.
    pub message: String,
}

/// Parses the outermost exception out of `text`.
///
/// With a traceback header: the first non-indented line after the last top-level header
/// (`Traceback (most recent call last):` or a top-level exception-group header) is the
/// `Type: message` line; every line after it belongs to the message. Without any header, a
/// text that is a single `Type: message` line (`ValueError: bad`) is parsed as such.
///
/// Returns `None` when no plausible exception line is found: an empty text, RQ's own failure
/// texts ("Work-horse terminated unexpectedly; …"), or a traceback cut off before its
/// exception line.
pub fn parse_outermost(text: &str) -> Option<ParsedException<'_>> {
    match last_header(text) {
        Some((block_start, indent)) => parse_block(text.get(block_start..)?, indent),
        None => parse_single_line(text),
    }
}

/// Splits into lines, dropping a trailing `\r` from each (tracebacks copied through Windows).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Finds the last top-level header, walking the lines backwards from the end (the outermost
/// exception is near the end, so this usually reads only the last block). Returns the byte
/// offset of the line after the header and the indentation every line of its block carries
/// (`""` for a plain traceback, `"  "` for a group, whose lines are `  | …`).
fn last_header(text: &str) -> Option<(usize, &str)> {
    let mut end = text.len();
    loop {
        let start = text.get(..end)?.rfind('\n').map_or(0, |nl| nl + 1);
        let line = text.get(start..end)?.trim_end(); // also drops a `\r`
        let next_line = (end + 1).min(text.len());
        if line == HEADER {
            return Some((next_line, ""));
        }
        if let Some(indent) = line.strip_suffix(GROUP_HEADER)
            && indent.bytes().all(|b| b == b' ')
        {
            return Some((next_line, indent));
        }
        end = start.checked_sub(1)?;
    }
}

/// Parses the block after a header: frames (indented), then the exception line, then the rest
/// of the message. `indent` is a group block's indentation (empty for a plain traceback).
fn parse_block<'a>(block: &'a str, indent: &str) -> Option<ParsedException<'a>> {
    let mut exception: Option<ParsedException<'a>> = None;
    for line in lines(block) {
        let content = if indent.is_empty() {
            line
        } else {
            // Inside a group every line is `<indent>| <content>`; `<indent>+-+---` (the first
            // sub-exception's separator) or anything else ends the group's own block.
            match line.strip_prefix(indent).and_then(|l| l.strip_prefix('|')) {
                Some(rest) => rest.strip_prefix(' ').unwrap_or(rest),
                None => break,
            }
        };
        match exception.as_mut() {
            None => {
                if content.trim().is_empty() || content.starts_with([' ', '\t']) {
                    continue; // frame lines, source lines, `^^^^` markers
                }
                // The first non-indented line is the exception; if it is not plausibly one
                // (a truncated or foreign text), there is nothing to report.
                exception = Some(split_exception_line(content)?);
            }
            Some(exc) => {
                if !exc.message.is_empty() {
                    exc.message.push('\n');
                }
                exc.message.push_str(content);
            }
        }
    }
    let mut exc = exception?;
    let kept = exc.message.trim_end().len();
    exc.message.truncate(kept);
    Some(exc)
}

/// A text with no header: parsed only if it is one `Type: message` line.
fn parse_single_line(text: &str) -> Option<ParsedException<'_>> {
    let line = text.trim();
    if line.is_empty() || line.contains('\n') || !line.contains(':') {
        return None;
    }
    split_exception_line(line)
}

/// Splits `Type: message` (or a bare `Type`) when `Type` looks like a Python class name.
fn split_exception_line(line: &str) -> Option<ParsedException<'_>> {
    let (exc_type, message) = match line.split_once(':') {
        Some((t, m)) => (t, m.strip_prefix(' ').unwrap_or(m)),
        None => (line.trim_end(), ""),
    };
    if !is_plausible_type(exc_type) {
        return None;
    }
    Some(ParsedException {
        exc_type,
        message: message.trim_end().to_owned(),
    })
}

/// A (possibly qualified) class name as Python prints it: identifier characters and dots,
/// plus `<` `>` for classes defined in functions (`app.jobs.run.<locals>.Oops`).
fn is_plausible_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TYPE_LEN
        && !t.starts_with('.')
        && !t.ends_with('.')
        && t.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '<' | '>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (String, String) {
        match parse_outermost(text) {
            Some(p) => (p.exc_type.to_owned(), p.message),
            None => panic!("no exception parsed from {text:?}"),
        }
    }

    #[test]
    fn simple_traceback() {
        let t = "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    f()\n    ^^^\nValueError: bad value\n";
        assert_eq!(parsed(t), ("ValueError".into(), "bad value".into()));
    }

    #[test]
    fn bare_type_without_message() {
        let t = "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyboardInterrupt\n";
        assert_eq!(parsed(t), ("KeyboardInterrupt".into(), String::new()));
    }

    #[test]
    fn dotted_types() {
        let t = "Traceback (most recent call last):\n  File \"x.py\", line 1\norders.models.Order.DoesNotExist: Order matching query does not exist.\n";
        assert_eq!(parsed(t).0, "orders.models.Order.DoesNotExist");
        let t = "Traceback (most recent call last):\n  File \"x.py\", line 1\napp.jobs.run.<locals>.Oops: x\n";
        assert_eq!(parsed(t).0, "app.jobs.run.<locals>.Oops");
    }

    #[test]
    fn explicit_chain_takes_the_last_exception() {
        let t = "Traceback (most recent call last):\n  File \"a.py\", line 2, in f\nConnectionRefusedError: [Errno 111] Connection refused\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"a.py\", line 5, in g\n    raise ValueError(\"bad\") from e\nValueError: bad\n";
        assert_eq!(parsed(t), ("ValueError".into(), "bad".into()));
    }

    #[test]
    fn implicit_chain_takes_the_last_exception() {
        let t = "Traceback (most recent call last):\n  File \"a.py\", line 2, in f\nKeyError: 'x'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"a.py\", line 5, in g\nTimeoutError: timed out\n";
        assert_eq!(parsed(t), ("TimeoutError".into(), "timed out".into()));
    }

    #[test]
    fn multi_line_message_and_notes_are_kept() {
        let t = "Traceback (most recent call last):\n  File \"a.py\", line 2, in f\nRuntimeError: first\nsecond\n  indented third\nnote: added later\n";
        assert_eq!(
            parsed(t),
            (
                "RuntimeError".into(),
                "first\nsecond\n  indented third\nnote: added later".into()
            )
        );
        // A note after an empty message.
        let t = "Traceback (most recent call last):\n  File \"a.py\", line 2, in f\nValueError\nthe note\n";
        assert_eq!(parsed(t), ("ValueError".into(), "the note".into()));
    }

    #[test]
    fn exception_group_is_outermost() {
        let t = "\
Traceback (most recent call last):
  File \"/tmp/eg.py\", line 18, in <module>
ValueError: x

During handling of the above exception, another exception occurred:

  + Exception Group Traceback (most recent call last):
  |   File \"/tmp/eg.py\", line 20, in <module>
  |     raise ExceptionGroup(\"eg\", [OSError(\"o\")])
  | ExceptionGroup: eg (1 sub-exception)
  | a note
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File \"/tmp/eg.py\", line 4, in f
    | ConnectionError: o
    +------------------------------------
";
        assert_eq!(
            parsed(t),
            (
                "ExceptionGroup".into(),
                "eg (1 sub-exception)\na note".into()
            )
        );
    }

    #[test]
    fn group_that_caused_a_plain_exception() {
        let t = "\
  + Exception Group Traceback (most recent call last):
  |   File \"/tmp/eg.py\", line 7, in f
  | ExceptionGroup: outer group (1 sub-exception)
  +-+---------------- 1 ----------------
    | Exception Group Traceback (most recent call last):
    | ExceptionGroup: nested (1 sub-exception)
    +-+---------------- 1 ----------------
      | Traceback (most recent call last):
      | KeyError: 'k'
      +------------------------------------

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File \"/tmp/eg.py\", line 11, in <module>
RuntimeError: top
";
        assert_eq!(parsed(t), ("RuntimeError".into(), "top".into()));
    }

    #[test]
    fn crlf_line_endings() {
        let t = "Traceback (most recent call last):\r\n  File \"x.py\", line 1\r\nValueError: bad\r\nmore\r\n";
        assert_eq!(parsed(t), ("ValueError".into(), "bad\nmore".into()));
    }

    #[test]
    fn no_header_single_line() {
        assert_eq!(
            parsed("ValueError: bad"),
            ("ValueError".into(), "bad".into())
        );
        assert_eq!(
            parsed("  socket.gaierror: [Errno -2] Name or service not known\n"),
            (
                "socket.gaierror".into(),
                "[Errno -2] Name or service not known".into()
            )
        );
    }

    #[test]
    fn no_header_non_exception_texts() {
        for t in [
            "",
            "   \n",
            "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
            "Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-29 12:00:00.123456",
            "Job stopped by user, work-horse terminated.",
            "ValueError",
            "ValueError: a\nTypeError: b",
            ": no type",
            "a b: c",
        ] {
            assert_eq!(parse_outermost(t), None, "{t:?}");
        }
    }

    #[test]
    fn truncated_or_foreign_blocks() {
        // Cut off before the exception line.
        assert_eq!(
            parse_outermost("Traceback (most recent call last):\n  File \"x.py\", line 1\n"),
            None
        );
        assert_eq!(parse_outermost("Traceback (most recent call last):"), None);
        // A sentence where the exception line should be.
        assert_eq!(
            parse_outermost(
                "Traceback (most recent call last):\n  File \"x\"\nnot an exception: x\n"
            ),
            None
        );
        // An indented header is not top level.
        assert_eq!(
            parse_outermost("    | Traceback (most recent call last):\n    | ValueError: x\n"),
            None
        );
    }

    #[test]
    fn never_panics_on_odd_inputs() {
        let odd = [
            "Traceback (most recent call last):\n\u{0}\u{ffff}: é",
            "  + Exception Group Traceback (most recent call last):",
            "  + Exception Group Traceback (most recent call last):\n  |",
            "  + Exception Group Traceback (most recent call last):\n  | é",
            "\r\n\r\n\r",
            "Traceback (most recent call last):\r",
            "é:é",
            ":",
            "\n:\n",
        ];
        for t in odd {
            let _ = parse_outermost(t);
        }
        // Every prefix and suffix of a real traceback, cut anywhere on a char boundary.
        let t = "Traceback (most recent call last):\n  File \"é.py\", line 1\nValueError: bé\n\nDuring handling of the above exception, another exception occurred:\n\n  + Exception Group Traceback (most recent call last):\n  | ExceptionGroup: g (1 sub-exception)\n  +-+---- 1 ----\n    | KeyError: 'k'\n";
        for (i, _) in t.char_indices() {
            let _ = parse_outermost(&t[..i]);
            let _ = parse_outermost(&t[i..]);
        }
    }
}
