//! `#[cairn::task]`: turns an `async fn` into a Cairn task.
//!
//! The function becomes a unit struct of the same name that implements `cairn::Task` (so it can
//! be passed to `ctx.call(square, 3)`), with the original body kept as `square::run(..)`. The
//! signature is derived from the parameter names and types and the return type (for
//! `Result<T, E>`, the output is `T` and errors are never cached). See [`macro@task`].

// Every dependency of the library is used by it (the lint runs per target; tests and
// benchmarks have their own dev-dependencies).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod options;

use options::Options;
use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::{
    FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Type, parse_macro_input,
};

/// Makes an `async fn` a Cairn task.
///
/// Options: `cache = true`, `cache_version = "1.0"` (or `"auto"`: a hash of the function's own
/// code, so editing its body invalidates), `cache_ignore_inputs = ["verbose"]`,
/// `max_age = "1h"`, `retries = 2`, `timeout = "30s"`, `lease_ttl = "30s"`, `name = "..."`.
/// A parameter marked `#[hashed]` enters the cache key through its type's `CacheHash`.
/// Every parameter and the output must implement `Serialize`, `DeserializeOwned` and
/// `JsonSchema`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    let mut func = parse_macro_input!(item as ItemFn);
    match expand(options, &mut func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Param {
    name: syn::Ident,
    ty: Type,
    hashed: bool,
}

/// `T` when `ty` is `Result<T, _>`.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    if args.args.len() != 2 {
        return None;
    }
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn expand(options: Options, func: &mut ItemFn) -> syn::Result<Tokens> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "#[cairn::task] needs an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "#[cairn::task] functions cannot be generic",
        ));
    }
    // The version is a hash of the function's code as written (signature, body and attributes
    // other than doc comments), before this macro changes anything.
    let code_attrs = func.attrs.iter().filter(|a| !a.path().is_ident("doc"));
    let (code_sig, code_block) = (&func.sig, &func.block);
    let code = quote!(#(#code_attrs)* #code_sig #code_block).to_string();
    let auto_version = format!("auto-{:016x}", xxhash_rust::xxh3::xxh3_64(code.as_bytes()));

    let mut params = Vec::new();
    for arg in func.sig.inputs.iter_mut() {
        let FnArg::Typed(pt) = arg else {
            return Err(syn::Error::new_spanned(arg, "tasks cannot take `self`"));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new_spanned(
                &pt.pat,
                "task parameters must be plain names",
            ));
        };
        let before = pt.attrs.len();
        pt.attrs.retain(|a| !a.path().is_ident("hashed"));
        params.push(Param {
            name: pi.ident.clone(),
            ty: (*pt.ty).clone(),
            hashed: pt.attrs.len() != before,
        });
    }
    for ignored in &options.ignore_inputs {
        if !params.iter().any(|p| p.name == ignored.value()) {
            return Err(syn::Error::new_spanned(
                ignored,
                format!("no parameter named {:?}", ignored.value()),
            ));
        }
    }

    let (output_ty, fallible) = match &func.sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => (ok, true),
            None => ((**ty).clone(), false),
        },
    };

    let fn_name = func.sig.ident.clone();
    let task_name = options.name.clone().unwrap_or_else(|| fn_name.to_string());
    let vis = &func.vis;
    let attrs = &func.attrs;
    let names: Vec<_> = params.iter().map(|p| &p.name).collect();
    let types: Vec<_> = params.iter().map(|p| &p.ty).collect();
    let name_strs: Vec<_> = params.iter().map(|p| p.name.to_string()).collect();
    let (input_ty, destructure) = match params.len() {
        1 => (quote!(#(#types)*), quote!(#(#names)*)),
        _ => (quote!((#(#types,)*)), quote!((#(#names,)*))),
    };
    let key_adds = params.iter().map(|p| {
        let (n, s) = (&p.name, p.name.to_string());
        if p.hashed {
            quote!(inputs.add_hashed(#s, #n);)
        } else {
            quote!(inputs.add(#s, #n)?;)
        }
    });
    let cache = options.cache;
    let version = match options.cache_version.as_deref() {
        Some("auto") => auto_version,
        Some(v) => v.to_string(),
        None => "0".to_string(),
    };
    let ignore: Vec<_> = options
        .ignore_inputs
        .iter()
        .map(syn::LitStr::value)
        .collect();
    let duration = |d: Option<u64>| match d {
        Some(ms) => quote!(::core::option::Option::Some(::std::time::Duration::from_millis(#ms))),
        None => quote!(::core::option::Option::None),
    };
    let max_age = duration(options.max_age_ms);
    let timeout = duration(options.timeout_ms);
    let retries = options.retries;
    let lease_ttl = match options.lease_ttl_ms {
        Some(ms) => quote!(::std::time::Duration::from_millis(#ms)),
        None => quote!(::std::time::Duration::from_secs(30)),
    };
    let call_body = if fallible {
        quote!(#fn_name::run(#(#names),*).await.map_err(|e| ::cairn::__private::TaskError::Failed { message: e.to_string() }))
    } else {
        quote!(::core::result::Result::Ok(#fn_name::run(#(#names),*).await))
    };
    let run_sig = {
        let mut s = func.sig.clone();
        s.ident = format_ident!("run");
        s
    };
    let block = &func.block;
    let spec_static = syn::Ident::new("SPEC", Span::call_site());

    Ok(quote! {
        #(#attrs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #fn_name;

        impl #fn_name {
            /// Runs the task body directly: no cache, no worker.
            #vis #run_sig #block
        }

        impl ::cairn::__private::Task for #fn_name {
            type Input = #input_ty;
            type Output = #output_ty;

            fn spec(&self) -> &'static ::cairn::__private::TaskSpec {
                static #spec_static: ::std::sync::LazyLock<::cairn::__private::TaskSpec> = ::std::sync::LazyLock::new(|| {
                    ::cairn::__private::TaskSpec::new(
                        ::cairn::__private::TaskSignature::new(#task_name, ::cairn::__private::TypeDesc::of::<#output_ty>())
                            #(.input(#name_strs, ::cairn::__private::TypeDesc::of::<#types>()))*,
                        ::cairn::__private::TaskOptions {
                            cache: #cache,
                            cache_version: ::std::string::String::from(#version),
                            ignore_inputs: ::std::vec![#(::std::string::String::from(#ignore)),*],
                            max_age: #max_age,
                            retries: #retries,
                            timeout: #timeout,
                            lease_ttl: #lease_ttl,
                        },
                    )
                });
                &#spec_static
            }

            #[allow(unused_variables)]
            fn key_inputs(&self, input: &Self::Input) -> ::cairn::__private::Result<::cairn::__private::KeyInputs> {
                let mut inputs = ::cairn::__private::KeyInputs::new();
                let #destructure = input;
                #(#key_adds)*
                ::core::result::Result::Ok(inputs)
            }

            fn invoke(&self, input: Self::Input) -> ::cairn::__private::BoxFuture<'static, ::core::result::Result<Self::Output, ::cairn::__private::TaskError>> {
                ::std::boxed::Box::pin(async move {
                    let #destructure = input;
                    #call_body
                })
            }
        }
    })
}
