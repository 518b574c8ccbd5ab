#!/usr/bin/perl

# The shared-memory table against the store defects of issue 13: a delete
# made while a link is down is not undone when it comes back (a tombstone
# outlives the record it deletes), a received lifetime of 0 means no
# expiry (docs/PROTOCOL.md), and a restarted node's write is not lost to
# an older value from a peer whose clock runs ahead.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $faketime = (grep { -e } glob('/usr/lib/*/faketime/libfaketime.so.1'))[0];

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream zone_sync/)->plan(9);

my $template = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
        zone_sync_timeout 1s;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=t:1m timeout=1s sync;
    keyval_zone zone=n:1m @TIMEOUT@ sync;
    keyval_zone zone=h:1m sync;
    keyval $arg_k $nv zone=n;
    keyval $arg_k $hv zone=h;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /api/ { api write=on; }
        location /nset { set $nv $arg_v; return 200 "ok"; }
        location /nget { return 200 "[$nv]"; }
        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF

# zone "n" has no timeout on node 0 (its records travel with ttl_ms 0),
# and timeout=1s on node 1
$c->write_file_expand(sub {
	my ($i) = @_;
	my $conf = $template;
	my $timeout = $i == 0 ? '' : 'timeout=1s';
	$conf =~ s/\@TIMEOUT\@/$timeout/;
	return $conf;
});

$c->run();

###############################################################################

sub value {
	my ($i, $loc, $k) = @_;
	my $r = $c->http_get($i, "/$loc?k=$k") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub on {
	my ($i, $loc, $k, $v) = @_;
	return wait_for(sub { (value($i, $loc, $k) // '') eq $v }, timeout => 10);
}

sub api {
	my ($i, $method, $uri, $body) = @_;
	return http_json($c->http_port($i), $method, "/api/9$uri", $body);
}

sub has_key {
	my ($i, $zone, $k) = @_;
	my ($s, $d) = api($i, GET => "/http/keyvals/$zone");
	return $s == 200 && exists $d->{$k};
}

sub log_of { $c->node($_[0])->read_file('error.log') }

# a received ttl_ms of 0 is no expiry, whatever the receiver's timeout=

$c->http_get(0, '/nset?k=forever&v=1');
ok(on(1, 'nget', 'forever', '1'), 'record without expiry arrives');
ok(!wait_for(sub { value(1, 'nget', 'forever') ne '1' }, timeout => 3),
	'and outlives the receiver\'s timeout');

# a delete made while the link is down: the tombstone lives as long as the
# record it deleted would have (an hour here), not the zone's 1s

is((api(0, POST => '/http/keyvals/t',
	'{"d":{"value":"v","expire":3600000}}'))[0], 201,
	'record that outlives the zone timeout');
ok(wait_for(sub { has_key(1, 't', 'd') }, timeout => 10), 'on both nodes');

my @stopped = $c->node(1)->worker_pids;
kill 'STOP', @stopped;
ok(wait_for(sub { log_of(0) =~ /disconnected from node/ }, timeout => 10),
	'link down');
is((api(0, PATCH => '/http/keyvals/t', '{"d":null}'))[0], 204,
	'deleted on node 0 meanwhile');
# longer than the zone's timeout, and than a housekeeping tick
wait_for(sub { 0 }, timeout => 3);
kill 'CONT', @stopped;

ok(wait_for(sub { !has_key(1, 't', 'd') && !has_key(0, 't', 'd') },
	timeout => 10), 'the delete wins on both nodes when the link is back');

# a restarted node writes before its fast peer's snapshot arrives

SKIP: {
skip 'libfaketime not installed', 2 unless $faketime;

$c->stop_node(1);
{
	local $ENV{LD_PRELOAD} = $faketime;
	local $ENV{FAKETIME} = '+10m';
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = 1;
	$c->start_node(1);
}
$c->http_get(1, '/set?k=c&v=old');
on(0, 'get', 'c', 'old');

@stopped = $c->node(1)->worker_pids;
kill 'STOP', @stopped;
$c->stop_node(0);
$c->start_node(0);
$c->http_get(0, '/set?k=c&v=mine');
kill 'CONT', @stopped;

ok(on(1, 'get', 'c', 'mine'), 'the restarted node\'s write reaches the fast peer');
ok(!wait_for(sub { value(0, 'get', 'c') ne 'mine' }, timeout => 2),
	'and is not overwritten by the older value');

}

###############################################################################
