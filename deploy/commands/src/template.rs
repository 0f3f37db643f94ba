//! Templates: `${name}` references inside strings of a tasks file, `$$` for a literal `$`.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// Text as written.
    Lit(String),
    /// `${path}`: a reference, as its dotted path (`src`, `outputs.obj`, `steps.cc.outputs.o`).
    Ref(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Template {
    /// Its pieces, in order.
    pub parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; the error says what is wrong (an unclosed `${`, an empty reference).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                lit.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(close) = body.find('}') else {
                    return Err(format!("unclosed \"${{\" in {text:?}"));
                };
                let name = body[..close].trim();
                let valid = !name.is_empty()
                    && name
                        .split('.')
                        .all(|p| !p.is_empty() && p.chars().all(is_name_char));
                if !valid {
                    return Err(format!(
                        "\"${{{}}}\" in {text:?} is not a reference like ${{name}} or ${{steps.build.outputs.bin}}",
                        &body[..close]
                    ));
                }
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Ref(name.to_string()));
                rest = &body[close + 1..];
            } else {
                return Err(format!(
                    "a lone \"$\" in {text:?}: write $$ for a dollar sign, ${{name}} for a reference"
                ));
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// The references, in order.
    pub fn refs(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// The single reference the template consists of, if it is exactly one `${…}`.
    pub fn whole_ref(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Ref(r)] => Some(r),
            _ => None,
        }
    }

    /// The text with each reference replaced by what `value` gives for it.
    pub fn render(&self, mut value: impl FnMut(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Ref(r) => out.push_str(&value(r)),
            }
        }
        out
    }

    /// The template as written (references back in `${…}`), for signatures.
    pub fn source(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(&l.replace('$', "$$")),
                Part::Ref(r) => out.push_str(&format!("${{{r}}}")),
            }
        }
        out
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_literals_and_escapes() {
        let t = Template::parse("cc -o ${outputs.obj} $$HOME ${src}.c").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Lit("cc -o ".into()),
                Part::Ref("outputs.obj".into()),
                Part::Lit(" $HOME ".into()),
                Part::Ref("src".into()),
                Part::Lit(".c".into()),
            ]
        );
        assert_eq!(t.whole_ref(), None);
        assert_eq!(Template::parse("${src}").unwrap().whole_ref(), Some("src"));
        assert_eq!(
            t.render(|r| r.to_uppercase()),
            "cc -o OUTPUTS.OBJ $HOME SRC.c"
        );
    }

    #[test]
    fn malformed_templates_say_why() {
        assert!(Template::parse("${src").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a $ b").unwrap_err().contains("$$"));
        assert!(
            Template::parse("${}")
                .unwrap_err()
                .contains("not a reference")
        );
        assert!(
            Template::parse("${a..b}")
                .unwrap_err()
                .contains("not a reference")
        );
    }
}
