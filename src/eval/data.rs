//! Evaluation data sets as multiple-choice items: SST-2 (`sentence<TAB>label`), ARC (as shipped:
//! `question.stem`, `question.choices[{text,label}]`, `answerKey`) and a generic JSONL
//! (`{"context": str, "choices": [str], "label": int}`). Every data error names the file and line.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use std::path::Path;

/// One item: a context, the candidate continuations, and the index of the right one.
#[derive(Clone, Debug, PartialEq)]
pub struct McItem {
    pub context: String,
    /// Continuations exactly as scored (spacing included).
    pub choices: Vec<String>,
    pub label: usize,
}

/// Which data set, as named on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Sst2,
    ArcEasy,
    ArcChallenge,
    /// A generic JSONL file.
    Mc(std::path::PathBuf),
}

impl std::str::FromStr for Task {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Task> {
        Ok(match s {
            "sst2" => Task::Sst2,
            "arc-easy" => Task::ArcEasy,
            "arc-challenge" => Task::ArcChallenge,
            other => match other.strip_prefix("mc:") {
                Some(p) if !p.is_empty() => Task::Mc(p.into()),
                _ => bail!("unknown task {other:?} (sst2, arc-easy, arc-challenge or mc:FILE.jsonl)"),
            },
        })
    }
}

impl Task {
    pub fn name(&self) -> String {
        match self {
            Task::Sst2 => "sst2".into(),
            Task::ArcEasy => "arc-easy".into(),
            Task::ArcChallenge => "arc-challenge".into(),
            Task::Mc(p) => format!("mc:{}", p.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default()),
        }
    }

    /// The task's file: one of the data folder's, or the JSONL given.
    pub fn path(&self, data: &crate::util::data::DataDir) -> Result<std::path::PathBuf> {
        use crate::util::data::{ARC_CHALLENGE_DEV, ARC_EASY_DEV, SST2_DEV};
        match self {
            Task::Sst2 => data.file(SST2_DEV),
            Task::ArcEasy => data.file(ARC_EASY_DEV),
            Task::ArcChallenge => data.file(ARC_CHALLENGE_DEV),
            Task::Mc(p) => Ok(p.clone()),
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))
}

/// A labelled SST-2 sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Sst2Row {
    pub sentence: String,
    /// 1 positive, 0 negative.
    pub label: usize,
}

pub fn load_sst2(path: &Path) -> Result<Vec<Sst2Row>> {
    let text = read(path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 || line.trim().is_empty() {
            continue; // header
        }
        let Some((sentence, label)) = line.rsplit_once('\t') else {
            bail!("{}:{}: expected `sentence<TAB>label`", path.display(), i + 1);
        };
        let label = match label.trim() {
            "0" => 0,
            "1" => 1,
            other => bail!("{}:{}: label {other:?} is not 0 or 1", path.display(), i + 1),
        };
        rows.push(Sst2Row { sentence: sentence.trim().to_string(), label });
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(rows)
}

/// The SST-2 prompt for one sentence; k-shot prompts prepend solved demonstrations.
pub fn sst2_prompt(sentence: &str) -> String {
    format!("Review: {sentence}\nSentiment:")
}

pub const SST2_LABELS: [&str; 2] = [" negative", " positive"];

pub fn sst2_items(rows: &[Sst2Row], demos: &[Sst2Row]) -> Vec<McItem> {
    let prefix: String =
        demos.iter().map(|d| format!("{}{}\n\n", sst2_prompt(&d.sentence), SST2_LABELS[d.label])).collect();
    rows.iter()
        .map(|r| McItem {
            context: format!("{prefix}{}", sst2_prompt(&r.sentence)),
            choices: SST2_LABELS.iter().map(|s| s.to_string()).collect(),
            label: r.label,
        })
        .collect()
}

fn jsonl(path: &Path) -> Result<Vec<(usize, Value)>> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{}:{}: malformed JSON ({e})", path.display(), i + 1))?;
        out.push((i + 1, v));
    }
    if out.is_empty() {
        bail!("{}: no items", path.display());
    }
    Ok(out)
}

/// ARC as shipped; the prompt is lm-evaluation-harness's (`Question: …\nAnswer:` + ` choice`).
pub fn load_arc(path: &Path) -> Result<Vec<McItem>> {
    jsonl(path)?
        .into_iter()
        .map(|(line, v)| {
            let at = |what: &str| anyhow!("{}:{line}: {what}", path.display());
            let stem = v["question"]["stem"].as_str().ok_or_else(|| at("no question.stem"))?;
            let choices = v["question"]["choices"].as_array().ok_or_else(|| at("no question.choices"))?;
            if choices.is_empty() {
                return Err(at("empty choices"));
            }
            let key = v["answerKey"].as_str().ok_or_else(|| at("no answerKey"))?;
            let mut texts = Vec::new();
            let mut label = None;
            for (j, c) in choices.iter().enumerate() {
                let text = c["text"].as_str().ok_or_else(|| at("a choice without text"))?;
                if c["label"].as_str() == Some(key) {
                    if label.is_some() {
                        return Err(at(&format!("answerKey {key:?} matches two choice labels")));
                    }
                    label = Some(j);
                }
                texts.push(format!(" {text}"));
            }
            let label = label.ok_or_else(|| at(&format!("answerKey {key:?} matches no choice label")))?;
            Ok(McItem { context: format!("Question: {stem}\nAnswer:"), choices: texts, label })
        })
        .collect()
}

/// `{"context": str, "choices": [str], "label": int}`; a choice gets a separating space unless the
/// context ends with whitespace or the choice starts with it.
pub fn load_generic(path: &Path) -> Result<Vec<McItem>> {
    jsonl(path)?
        .into_iter()
        .map(|(line, v)| {
            let at = |what: &str| anyhow!("{}:{line}: {what}", path.display());
            let context = v["context"].as_str().ok_or_else(|| at("no \"context\" string"))?;
            let choices = v["choices"].as_array().ok_or_else(|| at("no \"choices\" array"))?;
            if choices.is_empty() {
                return Err(at("empty choices"));
            }
            let label = v["label"].as_u64().ok_or_else(|| at("no integer \"label\""))? as usize;
            if label >= choices.len() {
                return Err(at(&format!("label {label} out of range for {} choices", choices.len())));
            }
            let choices = choices
                .iter()
                .map(|c| {
                    let c = c.as_str().ok_or_else(|| at("a choice is not a string"))?;
                    if c.is_empty() {
                        return Err(at("an empty choice"));
                    }
                    let needs_space = !context.ends_with(char::is_whitespace) && !c.starts_with(char::is_whitespace);
                    Ok(if needs_space { format!(" {c}") } else { c.to_string() })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(McItem { context: context.to_string(), choices, label })
        })
        .collect()
}
