//! Parsing `#[cairn::task(...)]` options.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprArray, ExprLit, Lit, LitStr, MetaNameValue, Token};

/// The options of one task.
pub(crate) struct Options {
    pub cache: bool,
    pub cache_version: Option<String>,
    pub ignore_inputs: Vec<LitStr>,
    pub max_age_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub lease_ttl_ms: Option<u64>,
    pub retries: u32,
    pub name: Option<String>,
}

/// `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"` in milliseconds.
pub(crate) fn parse_duration(lit: &LitStr) -> syn::Result<u64> {
    let text = lit.value();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        syn::Error::new_spanned(lit, "expected a duration like \"30s\", \"5m\" or \"1h\"")
    })?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(syn::Error::new_spanned(
                lit,
                "duration units are ms, s, m, h and d",
            ));
        }
    };
    Ok(n * ms)
}

fn lit_str(e: &Expr) -> syn::Result<LitStr> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(other, "expected a string")),
    }
}

impl Parse for Options {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut o = Options {
            cache: false,
            cache_version: None,
            ignore_inputs: Vec::new(),
            max_age_ms: None,
            timeout_ms: None,
            lease_ttl_ms: None,
            retries: 0,
            name: None,
        };
        for nv in Punctuated::<MetaNameValue, Token![,]>::parse_terminated(input)? {
            let key = nv
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            match key.as_str() {
                "cache" => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => o.cache = b.value,
                    other => return Err(syn::Error::new_spanned(other, "expected true or false")),
                },
                "cache_version" => o.cache_version = Some(lit_str(&nv.value)?.value()),
                "name" => o.name = Some(lit_str(&nv.value)?.value()),
                "cache_ignore_inputs" => match &nv.value {
                    Expr::Array(ExprArray { elems, .. }) => {
                        o.ignore_inputs = elems.iter().map(lit_str).collect::<syn::Result<_>>()?;
                    }
                    other => {
                        return Err(syn::Error::new_spanned(other, "expected [\"name\", ...]"));
                    }
                },
                "max_age" => o.max_age_ms = Some(parse_duration(&lit_str(&nv.value)?)?),
                "timeout" => o.timeout_ms = Some(parse_duration(&lit_str(&nv.value)?)?),
                "lease_ttl" => o.lease_ttl_ms = Some(parse_duration(&lit_str(&nv.value)?)?),
                "retries" => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => o.retries = i.base10_parse()?,
                    other => return Err(syn::Error::new_spanned(other, "expected a number")),
                },
                _ => {
                    return Err(syn::Error::new_spanned(
                        &nv.path,
                        "unknown option; known: cache, cache_version, cache_ignore_inputs, max_age, retries, timeout, lease_ttl, name",
                    ));
                }
            }
        }
        Ok(o)
    }
}
