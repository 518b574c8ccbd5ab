#!/usr/bin/perl

# Configuration of the keyval modules (http and stream): "keyval_zone" and
# "keyval" accepted in every documented form, and every refusal of
# "nginx -t" with its exact message and location.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Stream qw/ stream /;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http stream stream_return zone_sync/);

my $dir = $t->testdir();

chomp(my $page = `getconf PAGESIZE`);
$page = 4096 unless $page =~ /^\d+$/;
my $min = 8 * $page;            # the smallest zone

# [ name, directives, expected message ]; "# <A>" marks the line the
# message names
my @REFUSED = (
    [ 'unknown parameter', 'keyval_zone zone=one:1m foo; # <A>',
        'invalid parameter "foo" in "keyval_zone" directive in <A>' ],
    [ 'unknown parameter with a value',
        'keyval_zone zone=one:1m expire=1s; # <A>',
        'invalid parameter "expire=1s" in "keyval_zone" directive in <A>' ],
    [ 'bad size', 'keyval_zone zone=one:1x; # <A>',
        'invalid zone size "zone=one:1x" in "keyval_zone" directive in <A>' ],
    [ 'zero size', 'keyval_zone zone=one:0; # <A>',
        'invalid zone size "zone=one:0" in "keyval_zone" directive in <A>' ],
    [ 'no size', 'keyval_zone zone=one; # <A>',
        'invalid zone size "zone=one" in "keyval_zone" directive in <A>' ],
    [ 'zone too small', 'keyval_zone zone=one:' . ($min - 1) . '; # <A>',
        'zone "one" is too small in <A>' ],
    [ 'no zone name', 'keyval_zone zone=:1m; # <A>',
        'invalid zone name "zone=:1m" in "keyval_zone" directive in <A>' ],
    [ 'missing zone=', 'keyval_zone timeout=1s sync; # <A>',
        '"keyval_zone" must have "zone" parameter in <A>' ],
    [ 'no parameters', 'keyval_zone; # <A>',
        'invalid number of arguments in "keyval_zone" directive in <A>' ],
    [ 'zone declared twice', "keyval_zone zone=one:1m;\n"
        . 'keyval_zone zone=one:1m timeout=1s; # <A>',
        'duplicate zone "one" in <A>' ],
    [ 'zone declared twice, another size', "keyval_zone zone=one:1m;\n"
        . 'keyval_zone zone=one:64k; # <A>',
        'the size 65536 of shared memory zone "one" conflicts with already '
        . 'declared size 1048576 in <A>' ],
    [ 'keyval names an unknown zone', "keyval_zone zone=one:1m;\n"
        . 'keyval $uri $kv zone=two; # <A>',
        'unknown keyval zone "two" in <A>' ],
    [ 'keyval without zone=', "keyval_zone zone=one:1m;\n"
        . 'keyval $uri $kv one; # <A>',
        'invalid parameter "one" in "keyval" directive, expected "zone=name" in <A>' ],
    [ 'keyval with an empty zone=', "keyval_zone zone=one:1m;\n"
        . 'keyval $uri $kv zone=; # <A>',
        'invalid parameter "zone=" in "keyval" directive, expected "zone=name" in <A>' ],
    [ 'keyval with two arguments', "keyval_zone zone=one:1m;\n"
        . 'keyval $uri $kv; # <A>',
        'invalid number of arguments in "keyval" directive in <A>' ],
    [ 'variable without $', "keyval_zone zone=one:1m;\n"
        . 'keyval $uri kv zone=one; # <A>',
        'invalid variable name "kv" in "keyval" directive in <A>' ],
    [ 'empty variable name', "keyval_zone zone=one:1m;\n"
        . 'keyval $uri $ zone=one; # <A>',
        'invalid variable name "$" in "keyval" directive in <A>' ],
    [ 'variable bound twice', "keyval_zone zone=one:1m;\n"
        . "keyval \$uri \$kv zone=one;\n"
        . 'keyval $uri $kv zone=one; # <A>',
        'variable "$kv" is already defined in <A>' ],
    [ 'variable bound twice to two zones', "keyval_zone zone=one:1m;\n"
        . "keyval_zone zone=two:1m;\n"
        . "keyval \$uri \$kv zone=one;\n"
        . 'keyval $uri $kv zone=two; # <A>',
        'variable "$kv" is already defined in <A>' ],
    [ 'unknown type', 'keyval_zone zone=one:1m type=str; # <A>',
        'invalid type "str" in "keyval_zone" directive in <A>' ],
    [ 'empty state=', 'keyval_zone zone=one:1m state=; # <A>',
        'invalid parameter "state=" in "keyval_zone" directive in <A>' ],
    [ 'state= twice',
        "keyval_zone zone=one:1m state=$dir/a.json state=$dir/b.json; # <A>",
        qq{duplicate parameter "state=$dir/b.json" in "keyval_zone" directive in <A>} ],
    [ 'one state file for two zones',
        "keyval_zone zone=one:1m state=$dir/s.json;\n"
        . "keyval_zone zone=two:1m state=$dir/s.json; # <A>",
        qq{state file "$dir/s.json" is already used by keyval zone "one" in <A>} ],
    [ 'bad timeout', 'keyval_zone zone=one:1m timeout=1x; # <A>',
        'invalid timeout "1x" in "keyval_zone" directive in <A>' ],
    [ 'zero timeout', 'keyval_zone zone=one:1m timeout=0; # <A>',
        'invalid timeout "0" in "keyval_zone" directive in <A>' ],
    [ 'empty timeout', 'keyval_zone zone=one:1m timeout=; # <A>',
        'invalid timeout "" in "keyval_zone" directive in <A>' ],
);

# builtin variables differ in name: nginx's own message
my %BUILTIN = (http => 'request_uri', stream => 'server_port');

$t->plan(2 * (@REFUSED + 1 + 4 + 2) + 2 + 3);

###############################################################################

for my $ctx (qw/http stream/) {

    for my $r (@REFUSED) {
        my ($name, $body, $msg) = @$r;
        refused("$ctx: $name", conf($ctx, $body), $msg);
    }

    refused("$ctx: keyval binds a builtin variable", conf($ctx, <<"EOF"),
keyval_zone zone=one:1m;
keyval \$remote_addr \$$BUILTIN{$ctx} zone=one; # <A>
EOF
        qq{the duplicate "$BUILTIN{$ctx}" variable in <A>});

    # wrong contexts

    my $srv = $ctx eq 'http' ? "listen 127.0.0.1:8080;"
        : "listen 127.0.0.1:8081;\n        return \"\";";

    refused("$ctx: keyval_zone in server", conf($ctx, <<"EOF"),
server {
    $srv
    keyval_zone zone=one:1m; # <A>
}
EOF
        '"keyval_zone" directive is not allowed here in <A>');

    refused("$ctx: keyval in server", conf($ctx, <<"EOF"),
keyval_zone zone=one:1m;
server {
    $srv
    keyval \$remote_addr \$kv zone=one; # <A>
}
EOF
        '"keyval" directive is not allowed here in <A>');

    refused("$ctx: keyval at main level", conf($ctx, '', <<'EOF'),
keyval $remote_addr $kv zone=one; # <A>
EOF
        '"keyval" directive is not allowed here in <A>');

    refused("$ctx: keyval_zone at main level", conf($ctx, '', <<'EOF'),
keyval_zone zone=one:1m; # <A>
EOF
        '"keyval_zone" directive is not allowed here in <A>');

    # every documented form

    ok(accepted(conf($ctx, <<"EOF")), "$ctx: every form accepted");
keyval \$remote_addr \$early zone=later;
keyval_zone zone=one:$min;
keyval_zone zone=two:1m timeout=1h type=string sync;
keyval_zone zone=three:64k sync timeout=30s;
keyval_zone zone=later:1M;
keyval_zone zone=four:1m type=ip state=$dir/four-$ctx.json;
keyval_zone zone=five:1m state=$dir/five-$ctx.json timeout=1m type=prefix sync;
keyval \$remote_addr \$kv_one zone=one;
keyval "k-\$remote_addr-\$remote_port" \$kv_two zone=two;
keyval constant \$kv_three zone=three;
EOF

    refused("$ctx: zone= given twice",
        conf($ctx, 'keyval_zone zone=one:1m zone=two:1m; # <A>'),
        'duplicate parameter "zone=two:1m" in "keyval_zone" directive in <A>');
}

# one name, two modules: a shared memory zone each

refused('the same zone in http and stream', <<'EOF',
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%
    keyval_zone zone=one:1m;
}

stream {
    keyval_zone zone=one:1m; # <A>
}
EOF
    'the shared memory zone "one" is already declared for a different use '
    . 'in <A>');

ok(accepted(<<'EOF'), 'different zones in http and stream');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%
    keyval_zone zone=one:1m;
    keyval $remote_addr $kv zone=one;
}

stream {
    keyval_zone zone=two:1m;
    keyval $remote_addr $kv zone=two;
}
EOF

###############################################################################

# A valid configuration runs with nothing above notice in the error log,
# and the variables read empty for an absent key.

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=one:1m timeout=1h sync;
    keyval $remote_addr $kv zone=one;

    server {
        listen 127.0.0.1:8080;
        location / {
            return 200 "[$kv]";
        }
    }
}

stream {
    %%TEST_GLOBALS_STREAM%%

    keyval_zone zone=two:64k;
    keyval $remote_addr $kv zone=two;

    server {
        listen 127.0.0.1:8081;
        return "[$kv]";
    }
}
EOF

$t->run();

is(http_content(http_get('/')), '[]', 'run: http variable');
is(stream('127.0.0.1:' . port(8081))->read(), '[]', 'run: stream variable');
$t->stop();
is(join("\n", $t->read_file('error.log')
    =~ /^(.*\[(?:warn|error|crit|alert|emerg)\].*)$/mg),
    '', 'run: error log has nothing above notice');

###############################################################################

# a configuration with the directives in the http or stream block, or
# (when given) at the main level
sub conf {
    my ($ctx, $body, $main) = @_;
    $body =~ s/^/    /mg;
    $main //= '';
    return <<"EOF";
%%TEST_GLOBALS%%

$main
events {
}

$ctx {
    %%TEST_GLOBALS_\U$ctx\E%%
$body
}
EOF
}

sub nginx_t {
    my ($conf) = @_;
    $t->write_file_expand('nginx.conf', $conf);
    return $t->test_config();
}

sub accepted {
    my ($conf) = @_;
    my ($code, $out) = nginx_t($conf);
    return 1 if $code == 0 && $out !~ /\[(?:warn|error|crit|alert|emerg)\]/;
    diag($out);
    return 0;
}

# nginx -t refuses with exactly one [emerg]: $expect is the exact text
# (a string) or a qr//; <A> is the location "file:line" of the line
# marked "# <A>".
sub refused {
    my ($name, $conf, $expect) = @_;

    my ($code, $out) = nginx_t($conf);

    my %loc;
    my @lines = split /\n/, $t->read_file('nginx.conf');
    for my $i (0 .. $#lines) {
        $loc{$1} = "$dir/nginx.conf:" . ($i + 1)
            while $lines[$i] =~ /# <([A-Z])>/g;
    }

    my @emerg = $out =~ /^nginx: \[emerg\] (.*)$/mg;
    my $got = ($code == 0 ? "(exit code 0) " : '') . join("\n", @emerg);

    if (ref $expect) {
        my $re = "$expect";
        $re =~ s/<([A-Z])>/quotemeta($loc{$1} \/\/ "<$1?>")/ge;
        return like($got, qr/$re/, $name);
    }

    $expect =~ s/<([A-Z])>/$loc{$1} \/\/ "<$1?>"/ge;
    return is($got, $expect, $name);
}

###############################################################################
