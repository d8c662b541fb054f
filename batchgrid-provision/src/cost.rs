//! What an environment costs, from its rendered template at the list prices of its region:
//! itemised per month deployed and idle, per month parked, per GB-month of stored data, and per
//! hour for each running worker. Pure functions over the template text and a checked-in price
//! table ([`prices::TABLE`]), which names its sources and date; nothing is fetched.
//!
//! - [`inventory`] reads what bills from the template's resources;
//! - [`estimate`] prices it;
//! - [`text`] prints it.

pub mod estimate;
pub mod inventory;
pub mod prices;
pub mod text;

pub use estimate::{Estimate, Line, Rate, WorkerRate};
pub use prices::PriceTable;

/// Why an estimate cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostError {
    /// The price table is malformed.
    #[error("{origin}: {message}")]
    Table {
        /// The table's path.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The table has no prices for the region.
    #[error("no prices for region {region} in {path} (of {date}; it has {known}): add the region from the sources it names", path = prices::TABLE_PATH)]
    UnknownRegion {
        /// The region asked for.
        region: String,
        /// The regions the table has.
        known: String,
        /// The table's date.
        date: String,
    },
    /// The table lacks a price the template needs.
    #[error("no price for {what} in region {region} ({resource}) in {path}: add it from the sources it names", path = prices::TABLE_PATH)]
    UnknownPrice {
        /// The missing price.
        what: String,
        /// The region.
        region: String,
        /// The resource that needs it.
        resource: String,
    },
    /// The template cannot be read for prices.
    #[error("template resource {resource}: {message}")]
    Template {
        /// The resource's logical id.
        resource: String,
        /// What is wrong.
        message: String,
    },
}

/// Prices a rendered template in `region` with `table`.
pub fn of_template(template: &str, region: &str, table: &PriceTable) -> Result<Estimate, CostError> {
    estimate::estimate(&inventory::Inventory::of_template(template)?, table, region)
}

#[cfg(test)]
mod tests;
