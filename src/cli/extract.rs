use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use genret::index::Index;
use serde::Serialize;

/// Print documents as reconstructed from the FM-index alone: their token ids and the decoded
/// text (with genret's markers, e.g. `<title> ... </title>`).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  genret extract cranfield.idx 184 29\n  \
    genret extract cranfield.idx --all > docs.jsonl")]
pub struct ExtractArgs {
    /// Index directory.
    pub index: PathBuf,
    /// Document ids to extract.
    #[arg(required_unless_present = "all")]
    pub doc_ids: Vec<String>,
    /// Extract every document, one JSON line each.
    #[arg(long, conflicts_with = "doc_ids")]
    pub all: bool,
    /// One JSON line per document: `{"doc_id", "tokens", "text"}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Extracted<'a> {
    doc_id: &'a str,
    tokens: Vec<u32>,
    text: String,
}

pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let index = Index::open(&args.index)?;
    let positions: Vec<u32> = if args.all {
        (0..index.docs.len() as u32).collect()
    } else {
        args.doc_ids
            .iter()
            .map(|id| index.doc_position(id))
            .collect::<Result<_, _>>()?
    };
    let json = args.json || args.all;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for pos in positions {
        let tokens = index.fm.extract(pos)?;
        let id = index.docs.id(pos as usize)?;
        let doc = Extracted {
            doc_id: &id,
            text: index.tokenizer.decode(&tokens, true)?,
            tokens,
        };
        if json {
            serde_json::to_writer(&mut out, &doc)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{}\t{} tokens\t{:?}",
                doc.doc_id,
                doc.tokens.len(),
                doc.tokens
            )?;
            writeln!(out, "{}\n", doc.text)?;
        }
    }
    out.flush()?;
    Ok(())
}
