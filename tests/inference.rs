//! The model registry against a real PostgreSQL: PostgresML's tables, columns and enums are created once, by
//! however many Ocelot connections try at the same time, and a second run changes nothing.

mod common;

use common::*;
use ocelot::inference::registry;
use ocelot::pool::balance::Want;

#[tokio::test]
async fn registry_schema_is_postgresml_and_created_once() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let snapshot = proxy.shared().snapshot();
    let pool = snapshot.cluster.get("app", "postgres").unwrap().clone();
    // Two connections race to create it: one applies the migration, the other finds it done.
    let (mut a, mut b) = (
        pool.checkout(0, Want::Primary, true).await.unwrap(),
        pool.checkout(0, Want::Primary, true).await.unwrap(),
    );
    let (ra, rb) = tokio::join!(registry::ensure(&mut a), registry::ensure(&mut b));
    let mut found = [ra.unwrap(), rb.unwrap()];
    found.sort();
    assert_eq!(found, [0, registry::VERSION]);
    assert_eq!(registry::ensure(&mut a).await.unwrap(), registry::VERSION);
    let columns = |table: &str| {
        pg.psql_admin_db(
            "app",
            &format!(
                "SELECT string_agg(column_name || ':' || udt_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'pgml' AND table_name = '{table}'"
            ),
        )
    };
    assert_eq!(
        columns("projects"),
        "id:int8,name:text,task:task,created_at:timestamp,updated_at:timestamp"
    );
    assert_eq!(
        columns("models"),
        "id:int8,project_id:int8,snapshot_id:int8,num_features:int4,algorithm:text,runtime:runtime,hyperparams:jsonb,status:text,metrics:jsonb,search:text,search_params:jsonb,search_args:jsonb,created_at:timestamp,updated_at:timestamp"
    );
    assert_eq!(
        columns("deployments"),
        "id:int8,project_id:int8,model_id:int8,strategy:strategy,created_at:timestamp"
    );
    assert_eq!(
        columns("files"),
        "id:int8,model_id:int8,path:text,part:int4,created_at:timestamp,updated_at:timestamp,data:bytea"
    );
    assert_eq!(
        columns("snapshots"),
        "id:int8,relation_name:text,y_column_name:_text,test_size:float4,test_sampling:sampling,status:text,columns:jsonb,analysis:jsonb,created_at:timestamp,updated_at:timestamp,materialized:bool"
    );
    assert_eq!(
        pg.psql_admin_db("app", "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'pgml.strategy'::regtype"),
        "new_score,best_score,most_recent,rollback,specific"
    );
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT count(*) FROM pg_enum WHERE enumtypid = 'pgml.algorithm'::regtype"
        ),
        "45"
    );
    for view in ["overview", "trained_models", "deployed_models"] {
        pg.psql_admin_db("app", &format!("SELECT * FROM pgml.{view}"));
    }
}
