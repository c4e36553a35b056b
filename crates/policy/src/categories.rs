//! A set of data categories as a bit set: the guard intersects, tests and iterates these on every
//! call, so they cost a word, not an allocation.

use std::fmt;

use tutela_proto::CATEGORY_NAMES;
use tutela_proto::common::DataCategory;

/// A set of [`DataCategory`] values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategorySet(u32);

impl CategorySet {
    /// No category.
    pub const EMPTY: Self = Self(0);

    /// Every category that carries personal data (all but `none`).
    pub fn personal() -> Self {
        CATEGORY_NAMES
            .iter()
            .filter(|(c, _)| *c != DataCategory::None)
            .map(|(c, _)| *c)
            .collect()
    }

    /// The set of `categories`.
    pub fn of(categories: &[DataCategory]) -> Self {
        categories.iter().copied().collect()
    }

    fn bit(c: DataCategory) -> u32 {
        1u32 << (c as i32 as u32 & 31)
    }

    /// Adds `c`.
    pub fn insert(&mut self, c: DataCategory) {
        self.0 |= Self::bit(c);
    }

    /// Whether `c` is in the set.
    pub fn contains(self, c: DataCategory) -> bool {
        self.0 & Self::bit(c) != 0
    }

    /// Whether every category of `other` is in the set.
    pub fn contains_all(self, other: Self) -> bool {
        other.0 & !self.0 == 0
    }

    /// Categories in both.
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Categories in either.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Categories in this set but not in `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The categories, in proto order.
    pub fn iter(self) -> impl Iterator<Item = DataCategory> {
        CATEGORY_NAMES
            .iter()
            .map(|(c, _)| *c)
            .filter(move |c| self.contains(*c))
    }

    /// Short names, in proto order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(DataCategory::short_name).collect()
    }
}

impl FromIterator<DataCategory> for CategorySet {
    fn from_iter<T: IntoIterator<Item = DataCategory>>(iter: T) -> Self {
        let mut set = Self::EMPTY;
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl fmt::Debug for CategorySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_behave_like_sets() {
        let a: CategorySet = [DataCategory::Identity, DataCategory::Contact]
            .into_iter()
            .collect();
        let b: CategorySet = [DataCategory::Contact].into_iter().collect();
        assert!(a.contains_all(b));
        assert!(!b.contains_all(a));
        assert_eq!(a.intersect(b), b);
        assert_eq!(a.union(b), a);
        assert_eq!(a.names(), ["identity", "contact"]);
        assert!(!CategorySet::personal().contains(DataCategory::None));
        assert_eq!(CategorySet::personal().iter().count(), 11);
    }
}
