//! NumPy `.npy` (format 1.0) for a 1-D f32 array, written atomically.

use std::path::Path;

use vocollama_model::io::atomic_write::write_atomic;

pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", values.len());
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, ending in \n.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub fn write_f32(path: &Path, values: &[f32]) -> vocollama_model::Result<()> {
    write_atomic(path, &encode_f32(values))
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_is_aligned_and_data_follows() {
        let b = super::encode_f32(&[1.0, -2.5]);
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(b[10 + hlen - 1], b'\n');
        assert!(std::str::from_utf8(&b[10..10 + hlen]).unwrap().contains("'shape': (2,)"));
        assert_eq!(&b[10 + hlen..], [1f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
    }
}
