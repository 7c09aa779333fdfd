DROP TABLE integration_leases;
DROP TABLE cluster_nodes;
