use std::path::PathBuf;

use clap::Args;
use genret::index::Index;
use serde::Serialize;

/// Count a phrase in the index: its token ids, occurrences, documents, and the first
/// documents that contain it. The phrase is tokenized with the index's tokenizer.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret count cranfield.idx \"boundary layer\"\n  \
    genret count cranfield.idx --tokens 5,17,3 --json"
)]
pub struct CountArgs {
    /// Index directory.
    pub index: PathBuf,
    /// Phrase to count.
    #[arg(required_unless_present = "tokens")]
    pub phrase: Option<String>,
    /// Token ids instead of a phrase, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "phrase")]
    pub tokens: Option<Vec<u32>>,
    /// How many document ids to list.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Print `{"tokens", "count", "docs", "doc_ids"}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct CountOutput {
    tokens: Vec<u32>,
    count: usize,
    docs: usize,
    doc_ids: Vec<String>,
}

pub fn run(args: CountArgs) -> anyhow::Result<()> {
    let index = Index::open(&args.index)?;
    let tokens = match (&args.tokens, &args.phrase) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => index.tokenizer.encode(p)?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let range = index.fm.range(&tokens);
    let docs = index.fm.docs_of(&range);
    let out = CountOutput {
        count: range.count(),
        docs: docs.len(),
        doc_ids: docs
            .iter()
            .take(args.limit)
            .map(|&d| index.docs.id(d as usize))
            .collect::<Result<_, _>>()?,
        tokens,
    };
    if args.json {
        return super::print_json(&out);
    }
    let pieces: Vec<String> = out
        .tokens
        .iter()
        .map(|&t| format!("{:?}", index.tokenizer.id_to_token(t).unwrap_or_default()))
        .collect();
    println!("tokens      {:?} ({})", out.tokens, pieces.join(" "));
    println!("occurrences {}", out.count);
    println!("documents   {}", out.docs);
    if !out.doc_ids.is_empty() {
        let more = if out.docs > out.doc_ids.len() {
            ", ..."
        } else {
            ""
        };
        println!("doc ids     {}{more}", out.doc_ids.join(", "));
    }
    Ok(())
}
