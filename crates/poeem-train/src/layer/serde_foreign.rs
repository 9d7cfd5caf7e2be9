//! Serde forms of the settings types of `poeem-pq` and `poeem-rotation`, which do not depend on
//! serde themselves. Each submodule is used as `#[serde(with = "...")]` on a field.
//!
//! The foreign enums are `#[non_exhaustive]`: a variant added upstream and not mirrored here is
//! an error when serialising, never silently dropped.

fn unknown_variant<E: serde::ser::Error>(what: &str) -> E {
    E::custom(format!("{what}: a variant this version cannot serialise"))
}

/// [`poeem_rotation::PairSelection`] as its lowercase name (`"random"`, `"greedy"`, `"steepest"`).
pub(crate) mod pair_selection {
    use poeem_rotation::PairSelection;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &PairSelection, s: S) -> Result<S::Ok, S::Error> {
        value.name().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PairSelection, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// [`poeem_pq::PqTraining`] as `"residuals"` or `"raw_vectors"`.
pub(crate) mod pq_training {
    use poeem_pq::PqTraining;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Repr {
        Residuals,
        RawVectors,
    }

    pub(crate) fn serialize<S: Serializer>(value: &PqTraining, s: S) -> Result<S::Ok, S::Error> {
        match value {
            PqTraining::Residuals => Repr::Residuals,
            PqTraining::RawVectors => Repr::RawVectors,
            _ => return Err(super::unknown_variant("PqTraining")),
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PqTraining, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Residuals => PqTraining::Residuals,
            Repr::RawVectors => PqTraining::RawVectors,
        })
    }
}

/// [`poeem_pq::KMeansSettings`] field by field, its `init` as `"random_sample"`,
/// `"k_means_plus_plus"` or `{"centroids": [...]}`.
pub(crate) mod kmeans_settings {
    use poeem_pq::{KMeansInit, KMeansSettings};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum InitRepr {
        RandomSample,
        KMeansPlusPlus,
        Centroids(Vec<f32>),
    }

    #[derive(Serialize, Deserialize)]
    struct Repr {
        max_iter: usize,
        tolerance: f64,
        init: InitRepr,
        max_points_per_centroid: Option<usize>,
    }

    pub(crate) fn serialize<S: Serializer>(
        value: &KMeansSettings,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let init = match &value.init {
            KMeansInit::RandomSample => InitRepr::RandomSample,
            KMeansInit::KMeansPlusPlus => InitRepr::KMeansPlusPlus,
            KMeansInit::Centroids(c) => InitRepr::Centroids(c.clone()),
            _ => return Err(super::unknown_variant("KMeansInit")),
        };
        Repr {
            max_iter: value.max_iter,
            tolerance: value.tolerance,
            init,
            max_points_per_centroid: value.max_points_per_centroid,
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KMeansSettings, D::Error> {
        let r = Repr::deserialize(d)?;
        Ok(KMeansSettings {
            max_iter: r.max_iter,
            tolerance: r.tolerance,
            init: match r.init {
                InitRepr::RandomSample => KMeansInit::RandomSample,
                InitRepr::KMeansPlusPlus => KMeansInit::KMeansPlusPlus,
                InitRepr::Centroids(c) => KMeansInit::Centroids(c),
            },
            max_points_per_centroid: r.max_points_per_centroid,
        })
    }
}

/// [`poeem_pq::OpqConfig`] field by field, its initial rotation and objective by name.
/// Checkpoints written before these were settings have neither, and trained as
/// `Identity` / `IvfResiduals` do.
pub(crate) mod opq_config {
    use poeem_pq::{OpqConfig, OpqInit, OpqObjective};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum InitRepr {
        Random,
        Identity,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum ObjectiveRepr {
        Vectors,
        IvfResiduals,
    }

    fn init_before_the_setting() -> InitRepr {
        InitRepr::Identity
    }

    fn objective_before_the_setting() -> ObjectiveRepr {
        ObjectiveRepr::IvfResiduals
    }

    #[derive(Serialize, Deserialize)]
    struct Repr {
        n_rounds: usize,
        iterations_per_round: usize,
        max_train_points: Option<usize>,
        #[serde(default = "init_before_the_setting")]
        init: InitRepr,
        #[serde(default = "objective_before_the_setting")]
        objective: ObjectiveRepr,
    }

    pub(crate) fn serialize<S: Serializer>(value: &OpqConfig, s: S) -> Result<S::Ok, S::Error> {
        Repr {
            n_rounds: value.n_rounds,
            iterations_per_round: value.iterations_per_round,
            max_train_points: value.max_train_points,
            init: match value.init {
                OpqInit::Random => InitRepr::Random,
                OpqInit::Identity => InitRepr::Identity,
            },
            objective: match value.objective {
                OpqObjective::Vectors => ObjectiveRepr::Vectors,
                OpqObjective::IvfResiduals => ObjectiveRepr::IvfResiduals,
            },
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OpqConfig, D::Error> {
        let r = Repr::deserialize(d)?;
        Ok(OpqConfig {
            n_rounds: r.n_rounds,
            iterations_per_round: r.iterations_per_round,
            max_train_points: r.max_train_points,
            init: match r.init {
                InitRepr::Random => OpqInit::Random,
                InitRepr::Identity => OpqInit::Identity,
            },
            objective: match r.objective {
                ObjectiveRepr::Vectors => OpqObjective::Vectors,
                ObjectiveRepr::IvfResiduals => OpqObjective::IvfResiduals,
            },
        })
    }
}

/// [`poeem_rotation::GivensConfig`] field by field, its selection by name.
pub(crate) mod givens_config {
    use poeem_rotation::{GivensConfig, PairSelection};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Repr {
        learning_rate: f32,
        max_angle: f32,
        #[serde(with = "super::pair_selection")]
        selection: PairSelection,
        reorthonormalize_every: u64,
        seed: u64,
    }

    pub(crate) fn serialize<S: Serializer>(value: &GivensConfig, s: S) -> Result<S::Ok, S::Error> {
        Repr {
            learning_rate: value.learning_rate,
            max_angle: value.max_angle,
            selection: value.selection,
            reorthonormalize_every: value.reorthonormalize_every,
            seed: value.seed,
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<GivensConfig, D::Error> {
        let r = Repr::deserialize(d)?;
        Ok(GivensConfig {
            learning_rate: r.learning_rate,
            max_angle: r.max_angle,
            selection: r.selection,
            reorthonormalize_every: r.reorthonormalize_every,
            seed: r.seed,
        })
    }
}
