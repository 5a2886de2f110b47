{{ config(materialized='incremental', incremental_strategy='append', tags=['facts'],
    pre_hook=["{% if is_incremental() %}SET VARIABLE int_dossier_steps_before_their_dossier_since = (SELECT coalesce(max(seen_through), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
              "{% if is_incremental() %}DELETE FROM {{ this }} WHERE dossier_id IS NULL AND seen_through < (SELECT max(seen_through) FROM {{ this }}){% endif %}"]) }}
-- One row per step record that landed before any version of its dossier (dossier_id,
-- stepped_at, status_code, loaded_at), kept for fct_dossiers: it reads a changed dossier's steps
-- from the step months where its known steps start and the steps landed since its last build,
-- and a dossier seen for the first time has no known months, so the steps that came before it
-- would be missed.
--
-- Incremental (append): the step records landed since the last build (`seen_through`) whose
-- dossier has no version in staging yet, and, when it read any, one row without a dossier that
-- records how far it read, so that a build that found none still moves on.
--
-- Bounded: fct_dossiers deletes the rows of every dossier it holds once it has built (its
-- post_hook; it read them when it first computed the dossier, which it does in the build that
-- first finds the dossier's version), and each build here deletes the rows of how far earlier
-- builds read but the newest. What stays is the steps still waiting for their dossier.

with

records as not materialized (
    select * from {{ ref('stg_portal__dossier_step_records') }}
    {% if is_incremental() %}
    where loaded_at > getvariable('int_dossier_steps_before_their_dossier_since')
    {% endif %}
),

early as (
    select r.dossier_id, r.stepped_at, r.status_code, r.loaded_at
    from records as r
    where r.dossier_id not in (select dossier_id from {{ ref('stg_portal__dossiers') }})
)

select
    e.*,
    (select max(loaded_at) from records) as seen_through
from early as e
union all
-- how far this build read (no dossier)
select null, null, null, null, (select max(loaded_at) from records)
where (select max(loaded_at) from records) is not null
