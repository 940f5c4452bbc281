//! Structural comparison of XML trees, the equality the conformance checks use.

use crate::xml::{Element, Node};

/// Compares two trees by meaning: element namespace and local name, attributes as a set
/// of (namespace, name, value) (prefixes and `xmlns` declarations are not part of the tree),
/// and children in order. Whitespace-only text between child elements is ignored; the text
/// of elements without child elements is compared exactly (an absent text equals `""`).
///
/// Returns a description of the first difference, with its element path.
pub fn structurally_equal(a: &Element, b: &Element) -> Result<(), String> {
    let mut path = String::new();
    compare(a, b, &mut path)
}

fn compare(a: &Element, b: &Element, path: &mut String) -> Result<(), String> {
    let len = path.len();
    path.push('/');
    path.push_str(&a.name);
    let result = compare_here(a, b, path);
    path.truncate(len);
    result
}

fn compare_here(a: &Element, b: &Element, path: &str) -> Result<(), String> {
    if a.ns != b.ns || a.name != b.name {
        return Err(format!(
            "{path}: element {{{}}}{} != {{{}}}{}",
            a.ns, a.name, b.ns, b.name
        ));
    }
    let mut attrs_a: Vec<_> = a.attrs.iter().map(|x| (&x.ns, &x.name, &x.value)).collect();
    let mut attrs_b: Vec<_> = b.attrs.iter().map(|x| (&x.ns, &x.name, &x.value)).collect();
    attrs_a.sort();
    attrs_b.sort();
    if attrs_a != attrs_b {
        return Err(format!("{path}: attributes {attrs_a:?} != {attrs_b:?}"));
    }
    let ca = significant(a);
    let cb = significant(b);
    if ca.len() != cb.len() {
        return Err(format!(
            "{path}: {} significant children != {}",
            ca.len(),
            cb.len()
        ));
    }
    // Both lists are empty for leaf elements without text: equal.
    for (x, y) in ca.iter().zip(cb.iter()) {
        match (x, y) {
            (Node::Element(x), Node::Element(y)) => compare(x, y, &mut path.to_owned())?,
            (Node::Text(x), Node::Text(y)) if x == y => {}
            (Node::Text(x), Node::Text(y)) => {
                return Err(format!("{path}: text {x:?} != {y:?}"));
            }
            _ => return Err(format!("{path}: text and element children differ")),
        }
    }
    Ok(())
}

fn significant(e: &Element) -> Vec<&Node> {
    let has_elements = e.elements().next().is_some();
    e.children
        .iter()
        .filter(|n| match n {
            Node::Text(t) => !(t.is_empty() || (has_elements && t.trim().is_empty())),
            Node::Element(_) => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse;

    #[test]
    fn ignores_prefixes_attribute_order_and_layout() {
        let a =
            parse(br#"<s:E xmlns:s="urn:s" a="1" b="2"><s:X>t</s:X><s:Y></s:Y></s:E>"#).unwrap();
        let b = parse(b"<E xmlns=\"urn:s\" b=\"2\" a=\"1\">\n  <X>t</X>\n  <Y/>\n</E>").unwrap();
        assert_eq!(structurally_equal(&a, &b), Ok(()));
    }

    #[test]
    fn reports_the_first_difference_with_its_path() {
        let a = parse(br#"<E xmlns="urn:s"><X>t </X></E>"#).unwrap();
        let b = parse(br#"<E xmlns="urn:s"><X>t</X></E>"#).unwrap();
        let err = structurally_equal(&a, &b).unwrap_err();
        assert!(err.starts_with("/E/X: text"), "{err}");
        let c = parse(br#"<E xmlns="urn:other"><X>t </X></E>"#).unwrap();
        assert!(structurally_equal(&a, &c).unwrap_err().contains("element"));
        let d = parse(br#"<E xmlns="urn:s" k="v"><X>t </X></E>"#).unwrap();
        assert!(
            structurally_equal(&a, &d)
                .unwrap_err()
                .contains("attributes")
        );
    }
}
