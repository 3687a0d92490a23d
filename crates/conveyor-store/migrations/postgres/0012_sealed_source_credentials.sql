-- Source-URL credentials are sealed like secret values: they move into `secrets` under a name no
-- secret can have (names are letters, digits and '_'), where `Store::open` seals them with the
-- rest and key rotations re-seal them.
INSERT INTO secrets (project, name, value)
    SELECT project, 'source credentials', credentials FROM source_credentials;
DROP TABLE source_credentials;
