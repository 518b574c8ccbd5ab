#!/usr/bin/perl

# A client written for NGINX Plus by someone else, unchanged, against our
# API on a live 3-node cluster: the NGINX Plus Go client
# (github.com/nginxinc/nginx-plus-go-client, Debian's
# golang-github-nginxinc-nginx-plus-go-client-dev) driven by
# scripts/plus-go-client: it reads /stream/zone_sync and every status
# endpoint (GetStats: our zones' slab figures, the limit_req zone, nginx's
# connection counters), and manages http and stream keyvals through its own
# methods; writes on one node must show on the others.  Skipped when Go or the library is not installed.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $lib = '/usr/share/gocode/src/github.com/nginxinc/nginx-plus-go-client';
plan(skip_all => 'needs golang-go and golang-github-nginxinc-nginx-plus-go-client-dev')
    unless -d $lib && grep { -x "$_/go" } split /:/, $ENV{PATH};

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)->plan(2);

$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    keyval_zone  zone=skv:1m sync;
    keyval       $remote_addr $sx zone=skv;

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone  zone=one:1m sync;
    keyval       $arg_k $kv zone=one;

    sync_limit_req_zone $arg_who zone=perip:1m rate=10r/s sync;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /api {
            api write=on;
        }
    }
}

EOF

$c->run();

###############################################################################

my $script = "$FindBin::Bin/../scripts/plus-go-client/run";
my $work = $c->testdir() . '/go';
my $apis = join ',', map { 'http://127.0.0.1:' . $c->http_port($_) . '/api' }
    0 .. 2;

local $ENV{PLUS_GO_CLIENT_WORKDIR} = $work;
my $out = `$script -api $apis -zone one -stream-zone skv -limit-zone perip -timeout 10s 2>&1`;
my $rc = $? >> 8;

is($rc, 0, 'the NGINX Plus Go client passes against a 3-node cluster')
    or diag($out);
like($out, qr/^all checks passed$/m, 'all client checks ran');
note($out);

###############################################################################
