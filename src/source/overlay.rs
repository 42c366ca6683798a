//! A source with tensors added in memory: the ones a converter computes from the config rather
//! than reads (Llama 3's `rope_freqs.weight`, as `convert_hf_to_gguf.py`'s
//! `generate_extra_tensors` makes it). They are small (one value per RoPE frequency), so holding
//! them does not break streaming.

use super::{TensorDesc, TensorSource};
use crate::quant::GgmlType;
use anyhow::{anyhow, Result};

pub struct Overlay<'a> {
    base: &'a dyn TensorSource,
    /// The base's tensors, then the added ones.
    descs: Vec<TensorDesc>,
    /// The added tensors' F32 bytes, by name.
    added: Vec<(String, Vec<u8>)>,
}

impl<'a> Overlay<'a> {
    /// `added`: (name, row-major shape, values). An added name hides a base tensor of that name.
    pub fn new(base: &'a dyn TensorSource, added: Vec<(String, Vec<usize>, Vec<f32>)>) -> Overlay<'a> {
        let mut descs: Vec<TensorDesc> =
            base.tensors().iter().filter(|t| !added.iter().any(|(n, _, _)| *n == t.name)).cloned().collect();
        let mut bytes = Vec::new();
        for (name, shape, data) in added {
            descs.push(TensorDesc { name: name.clone(), shape, dtype: GgmlType::F32 });
            bytes.push((name, data.iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
        Overlay { base, descs, added: bytes }
    }

    fn added(&self, name: &str) -> Option<&[u8]> {
        self.added.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice())
    }
}

impl TensorSource for Overlay<'_> {
    fn tensors(&self) -> &[TensorDesc] {
        &self.descs
    }

    fn raw(&self, name: &str) -> Result<&[u8]> {
        match self.added(name) {
            Some(b) => Ok(b),
            None if self.base.tensor(name).is_some() => self.base.raw(name),
            None => Err(anyhow!("no tensor {name:?} in {}", self.base.location(name))),
        }
    }

    fn release(&self, name: &str) {
        if self.added(name).is_none() {
            self.base.release(name);
        }
    }

    fn release_part(&self, name: &str, part: &[u8]) {
        if self.added(name).is_none() {
            self.base.release_part(name, part);
        }
    }

    fn prefetch(&self, name: &str) {
        if self.added(name).is_none() {
            self.base.prefetch(name);
        }
    }

    fn read_direct<'b>(
        &self,
        name: &str,
        range: std::ops::Range<usize>,
        buf: &'b mut crate::util::direct::DirectBuffer,
    ) -> Option<Result<&'b [u8]>> {
        match self.added(name) {
            Some(_) => None,
            None => self.base.read_direct(name, range, buf),
        }
    }

    fn reads_direct(&self, name: &str) -> bool {
        self.added(name).is_none() && self.base.reads_direct(name)
    }

    fn location(&self, name: &str) -> String {
        match self.added(name) {
            Some(_) => format!("{name} (computed from config.json)"),
            None => self.base.location(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Empty;
    impl TensorSource for Empty {
        fn tensors(&self) -> &[TensorDesc] {
            &[]
        }
        fn raw(&self, name: &str) -> Result<&[u8]> {
            Err(anyhow!("no {name}"))
        }
        fn release(&self, _: &str) {}
        fn release_part(&self, _: &str, _: &[u8]) {}
        fn location(&self, _: &str) -> String {
            "empty".into()
        }
    }

    #[test]
    fn added_tensors_read_back_as_f32() {
        let o = Overlay::new(&Empty, vec![("rope_freqs.weight".into(), vec![3], vec![1.0, 2.5, 8.0])]);
        assert_eq!(o.tensors().len(), 1);
        assert_eq!(o.read_f32("rope_freqs.weight").unwrap(), vec![1.0, 2.5, 8.0]);
        assert!(o.raw("other").is_err());
    }
}
