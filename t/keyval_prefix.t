#!/usr/bin/perl

# keyval_zone type=prefix: the longest record key that is a prefix of the
# lookup key wins, among overlapping prefixes; an empty lookup key matches
# nothing and an empty record key cannot be written; on a 2-node cluster
# the same lookups answer on the peer and a deleted prefix stops matching
# everywhere (http and stream).

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Stream qw/ stream /;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream stream_return zone_sync/)
	->plan(18);

$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    keyval_zone zone=sp:1m type=prefix sync;
    keyval "host-%%NODE%%.example" $sv zone=sp;

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
    }

    server {
        listen 127.0.0.1:%%NODE_PORT_82%%;
        return "[$sv]";
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=routes:1m type=prefix sync;
    keyval $arg_p $route zone=routes;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /match { return 200 "[$route]"; }
        location /set { set $route $arg_v; return 200 "ok"; }

        location /api/ {
            api write=on;
        }
    }
}

EOF

$c->run();

###############################################################################

sub api {
	my ($node, $method, $uri, $body) = @_;
	return http_json($c->http_port($node), $method, "/api/9$uri", $body);
}

sub match {
	my ($node, $p) = @_;
	my $r = $c->http_get($node, "/match?p=$p") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

is((api(0, POST => '/http/keyvals/routes',
	'{"/api":"api","/api/v1":"v1","/api/v1/users/":"users","/b":"b"}'))[0],
	201, 'POST overlapping prefixes');

my %LOOKUPS = (
	'/api/v1/users/42' => 'users',
	'/api/v1/users' => 'v1',
	'/api/v1' => 'v1',
	'/api/v2' => 'api',
	'/api' => 'api',
	'/ap' => '',
	'/bcd' => 'b',
	'/c' => '',
	'' => '',
);

for my $p (sort keys %LOOKUPS) {
	is(match(0, $p), $LOOKUPS{$p}, "node 0: '$p' matches '$LOOKUPS{$p}'");
}

my ($s, $d) = api(0, POST => '/http/keyvals/routes', '{"":"root"}');
is("$s " . ($d->{error}{code} // ''), '400 KeyvalFormatError',
	'an empty record key is refused');

$c->http_get(0, '/set?p=/set/&v=viaset');
$LOOKUPS{'/set/here'} = 'viaset';

ok(wait_for(sub {
	for my $p (keys %LOOKUPS) {
		return 0 unless (match(1, $p) // '-') eq $LOOKUPS{$p};
	}
	return 1;
}, timeout => 10), 'node 1 answers every lookup as node 0 after sync');

is((api(1, PATCH => '/http/keyvals/routes', '{"/api/v1":null}'))[0], 204,
	'delete /api/v1 on node 1');
ok(wait_for(sub {
	(match(0, '/api/v1/x') // '') eq 'api' && (match(1, '/api/v1/x') // '') eq 'api'
}, timeout => 10), 'deleted prefix: /api/v1/x falls back to /api everywhere');
is(match(0, '/api/v1/users/7'), 'users', 'the longer prefix still matches');

is_deeply((api(1, GET => '/http/keyvals/routes'))[1], {
	'/api' => 'api', '/api/v1/users/' => 'users', '/b' => 'b', '/set/' => 'viaset',
}, 'the zone holds the keys as written');

# stream

sub sget {
	my ($node) = @_;
	my $r = stream('127.0.0.1:' . $c->port($node, 82))->read() // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

is((api(0, POST => '/stream/keyvals/sp', '{"host-":"any host"}'))[0], 201,
	'stream: POST a prefix on node 0');
ok(wait_for(sub { (sget(0) // '') eq 'any host' && (sget(1) // '') eq 'any host' },
	timeout => 10), 'stream: both nodes match it');

$c->stop();

###############################################################################
